"""EVAD's trainer for detectron2 LazyConfig files (``configs/lazy/*.py``): what ``train_net.py
--config-file X.py`` runs. It keeps everything the yacs trainer (:mod:`evad_d2.engine.trainer`)
has: the EVAD checkpointer (VideoMAE / Hugging Face / official EVAD conversion, complete-file
checked resume with the RNG states), epoch schedules, the resumable sampler, the skipping of bad
samples, layer decay (``optimizer.params`` is :func:`~evad_d2.engine.optimizer.build_param_groups`),
the configured evaluator, and detectron2's ``launch`` for several processes.

    from evad_d2.engine.lazy_trainer import lazy_train_and_evaluate
    results = lazy_train_and_evaluate(default_argument_parser().parse_args(["--config-file", PY, "train.max_iter=10"]))
"""
import logging
import math
import os
import weakref

import torch
from detectron2.config import instantiate
from detectron2.data import build_detection_train_loader
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, default_setup, default_writers, hooks
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.solver import LRMultiplier
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from detectron2.utils.registry import locate
from omegaconf import ListConfig

from ..checkpoint import EVADCheckpointer
from ..config_check import AMP_PRECISIONS
from ..data.bad_samples import BadSampleSummary, RetryMapDataset, skip_bad_samples_at_load
from .checkpointing import ResumablePeriodicCheckpointer
from .distributed import check_backend_for_device, create_ddp_model
from .lazy import LazyConfigError, load_lazy_config, write_lazy_config
from .rng_state import GatherRNGStates, RNGState
from .sampler import ResumableTrainingSampler
from .trainer import cpu_threads

__all__ = ["LazyEVADTrainer", "build_lazy_checkpointer", "is_lazy_config", "lazy_setup", "lazy_train_and_evaluate"]

logger = logging.getLogger(__name__)

# dataloader.train entries the trainer builds itself (the rest are the loader function's arguments).
_TRAIN_LOADER_PARTS = ("_target_", "dataset", "mapper", "sampler")


def is_lazy_config(path: str) -> bool:
    """Whether ``--config-file`` names a LazyConfig (``.py``) rather than a yacs YAML."""
    return str(path).endswith(".py")


def build_lazy_checkpointer(cfg, model, **checkpointables) -> EVADCheckpointer:
    """The EVAD checkpointer of ``cfg.train`` (``output_dir`` and ``checkpointer`` options)."""
    c = cfg.train.checkpointer
    return EVADCheckpointer(
        model, cfg.train.output_dir,
        skip_shape_mismatch=c.skip_shape_mismatch, videomae_decoder_init=c.videomae_decoder_init,
        new_action_classes=c.new_action_classes, **checkpointables,
    )


class LazyEVADTrainer(DefaultTrainer):
    """detectron2's DefaultTrainer loop on a LazyConfig: the model, optimizer, loaders, lr schedule
    and evaluator are instantiated from the file; the data, schedule and checkpoint handling are
    :class:`~evad_d2.engine.trainer.EVADTrainer`'s.

    ``dataloader.train``'s ``dataset`` (dataset dicts) and ``mapper`` are instantiated here; the
    mapper is wrapped in :class:`RetryMapDataset` and the loader gets a
    :class:`ResumableTrainingSampler` (seeded by ``train.seed``); its other arguments go to its
    ``_target_`` (``build_detection_train_loader``).
    """

    def __init__(self, cfg):
        TrainerBase.__init__(self)  # DefaultTrainer.__init__ reads a yacs config
        train = cfg.train
        loader_cfg = cfg.dataloader.train
        skip_bad = bool(loader_cfg.mapper.get("skip_bad_samples", False))
        with skip_bad_samples_at_load(skip_bad) as self._load_skips:
            self._train_dataset = instantiate(loader_cfg.dataset)
        self.max_iter, iters_per_epoch = self._resolve_schedule(cfg, len(self._train_dataset))
        cfg.lr_multiplier.max_iter = self.max_iter
        cfg.lr_multiplier.iters_per_epoch = iters_per_epoch
        if comm.is_main_process() and train.output_dir:
            # default_setup saved the config before the schedule was resolved: save what runs.
            os.makedirs(train.output_dir, exist_ok=True)
            write_lazy_config(cfg, os.path.join(train.output_dir, "config.yaml"))
        amp = self._amp_precision(train)

        model = instantiate(cfg.model).to(torch.device(train.device))
        logger.info("Model:\n%s", model)
        cfg.optimizer.params.model = model
        optimizer = instantiate(cfg.optimizer)
        cfg.optimizer.params.model = None  # a module does not belong in the saved config
        data_loader = self._build_train_loader(loader_cfg, train.seed)
        model = create_ddp_model(model, **train.ddp)
        self._trainer = (AMPTrainer if amp is not None else SimpleTrainer)(model, data_loader, optimizer)
        if amp is not None:
            self._trainer.precision = amp
        self.scheduler = LRMultiplier(optimizer, multiplier=instantiate(cfg.lr_multiplier), max_iter=self.max_iter)
        self._rng = RNGState()
        self.checkpointer = build_lazy_checkpointer(cfg, model, trainer=weakref.proxy(self), rng=self._rng)
        self.start_iter = 0
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @staticmethod
    def _resolve_schedule(cfg, num_train_samples: int):
        """(max_iter, iterations per epoch or None) from ``train.max_epochs`` / ``train.max_iter``."""
        train, batch = cfg.train, cfg.dataloader.train.total_batch_size
        if train.max_epochs <= 0:
            return int(train.max_iter), None
        if num_train_samples <= 0:
            raise LazyConfigError(f"the training set of dataloader.train.dataset ({cfg.dataloader.train.dataset}) is empty")
        iters_per_epoch = math.ceil(num_train_samples / batch)
        max_iter = int(round(train.max_epochs * iters_per_epoch))
        logger.info(
            "schedule: %d samples, %d iterations/epoch -> %d iterations (train.max_epochs %s)",
            num_train_samples, iters_per_epoch, max_iter, train.max_epochs,
        )
        return max_iter, iters_per_epoch

    @staticmethod
    def _amp_precision(train):
        """The autocast dtype of ``train.amp`` (None when off)."""
        if not train.amp.enabled:
            return None
        if not str(train.device).startswith("cuda"):
            raise LazyConfigError(
                f"train.amp.enabled needs a CUDA device, but train.device is {train.device!r}: set train.amp.enabled=False to train on the CPU"
            )
        if train.amp.precision not in AMP_PRECISIONS:
            raise LazyConfigError(f"train.amp.precision must be one of {AMP_PRECISIONS}, got {train.amp.precision!r}")
        return getattr(torch, train.amp.precision)

    def _build_train_loader(self, loader_cfg, seed: int):
        self._train_sampler = ResumableTrainingSampler(len(self._train_dataset), shuffle=True, seed=seed if seed >= 0 else None)
        self._train_mapper = instantiate(loader_cfg.mapper)
        target = loader_cfg._target_
        build = locate(target) if isinstance(target, str) else target
        kwargs = {k: (list(v) if isinstance(v, ListConfig) else v) for k, v in loader_cfg.items() if k not in _TRAIN_LOADER_PARTS}
        if build is not build_detection_train_loader:
            raise LazyConfigError(f"dataloader.train must call detectron2.data.build_detection_train_loader, not {target}")
        return build(RetryMapDataset(self._train_dataset, self._train_mapper), mapper=None, sampler=self._train_sampler, **kwargs)

    def build_hooks(self):
        """EVADTrainer's hooks: RNG gathering, timer, lr schedule, the resumable periodic
        checkpointer, evaluation (every ``train.eval_period`` and at the end), the writers and the
        bad-sample summary."""
        train = self.cfg.train
        period = train.checkpointer.period

        def test_and_save_results():
            self._last_eval_results = self.test(self.cfg, self.model)
            return self._last_eval_results

        ret = [GatherRNGStates(self._rng, period), hooks.IterationTimer(), hooks.LRScheduler()]
        if comm.is_main_process():
            ret.append(ResumablePeriodicCheckpointer(self.checkpointer, period, max_to_keep=train.checkpointer.max_to_keep))
        ret.append(hooks.EvalHook(train.eval_period, test_and_save_results))
        if comm.is_main_process():
            ret.append(hooks.PeriodicWriter(default_writers(train.output_dir, self.max_iter), period=train.log_period))
        counter = self._train_mapper.bad_samples
        if counter is not None:
            batch = self.cfg.dataloader.train.total_batch_size
            ret.append(BadSampleSummary(counter, BadSampleSummary.iters_per_epoch_for(len(self._train_dataset), batch), self._load_skips))
        return ret

    def resume_or_load(self, resume=True):
        """Resume from ``train.output_dir`` (``resume``) or load ``train.init_checkpoint``; the
        sampler skips what the resumed run had consumed."""
        self.checkpointer.resume_or_load(self.cfg.train.init_checkpoint, resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            self.start_iter = self.iter + 1
        per_process = self.cfg.dataloader.train.total_batch_size // comm.get_world_size()
        self._train_sampler.start = self.start_iter * per_process

    def train(self):
        TrainerBase.train(self, self.start_iter, self.max_iter)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """The metrics of ``dataloader.evaluator`` on ``dataloader.test`` (``{task: {metric: value}}``,
        as the yacs trainer's ``test`` of one dataset); the evaluator's ``output_dir`` defaults to
        ``{train.output_dir}/inference/{dataset name}``."""
        names = cfg.dataloader.test.dataset.names
        name = names if isinstance(names, str) else ",".join(names)
        if cfg.dataloader.evaluator.get("output_dir", None) is None:
            cfg.dataloader.evaluator.output_dir = os.path.join(cfg.train.output_dir, "inference", name)
        results = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
        if comm.is_main_process():
            print_csv_format(results)
        return results


def lazy_setup(args):
    """The checked LazyConfig of detectron2's parsed ``args`` (``--config-file X.py`` and
    ``key=value`` opts), with the loggers (console, ``train.output_dir``/log.txt), the seed, the
    saved config and the CPU threads set up."""
    cfg = load_lazy_config(args.config_file, args.opts)
    batch = cfg.dataloader.train.total_batch_size
    if batch % comm.get_world_size():
        raise LazyConfigError(
            f"{args.config_file}: dataloader.train.total_batch_size = {batch} must be a multiple of the "
            f"number of processes ({comm.get_world_size()}): each process takes an equal share"
        )
    check_backend_for_device(str(cfg.train.device))
    default_setup(cfg, args)
    setup_logger(cfg.train.output_dir, distributed_rank=comm.get_rank(), name="evad_d2")
    if str(cfg.train.device) == "cpu":
        torch.set_num_threads(min(torch.get_num_threads(), cpu_threads(cfg.dataloader.train.num_workers)))
        logger.info("CPU training with %d intra-op threads per process", torch.get_num_threads())
    return cfg


def lazy_train_and_evaluate(args, trainer_cls=LazyEVADTrainer):
    """What ``python train_net.py --config-file X.py ARGS`` runs in each process: train
    (``--resume``: continue the run in ``train.output_dir``) and evaluate, or with ``--eval-only``
    evaluate ``train.init_checkpoint``. Returns the evaluation results ({task: metrics}; after
    training only when the last evaluation ran) or None.
    """
    cfg = lazy_setup(args)
    if args.eval_only:
        model = instantiate(cfg.model).to(torch.device(cfg.train.device))
        build_lazy_checkpointer(cfg, model).resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
        return trainer_cls.test(cfg, model)
    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    return getattr(trainer, "_last_eval_results", None)
