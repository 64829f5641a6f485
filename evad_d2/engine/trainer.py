"""EVAD's trainer: detectron2's DefaultTrainer with EVAD's data, optimizer, evaluators,
checkpoint formats and exact resume (``train_net.py`` is its command line).

    from detectron2.engine import default_argument_parser
    from evad_d2.engine.trainer import train_and_evaluate
    results = train_and_evaluate(default_argument_parser().parse_args(["--config-file", CFG]))
"""
import logging
import os
import weakref

import torch
from detectron2.data import MetadataCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.data.build import get_detection_dataset_dicts
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, default_setup
from detectron2.engine import hooks
from detectron2.evaluation import DatasetEvaluators, verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from evad_d2.checkpoint import EVADCheckpointer
from evad_d2.config import get_evad_cfg
from evad_d2.config_check import check_batch_split
from evad_d2.data.bad_samples import BadSampleSummary, RetryMapDataset, skip_bad_samples_at_load
from evad_d2.data.clip_mapper import ClipDatasetMapper
from evad_d2.evaluation import AVAEvaluator, UCFJHMDBEvaluator
from evad_d2.utils.atomic_io import atomic_write

from .checkpointing import ResumablePeriodicCheckpointer
from .distributed import check_backend_for_device, create_ddp_model
from .optimizer import build_optimizer
from .rng_state import GatherRNGStates, RNGState
from .sampler import ResumableTrainingSampler
from .schedule import resolve_epoch_schedule

logger = logging.getLogger(__name__)


class EVADTrainer(DefaultTrainer):
    """DefaultTrainer with EVAD's data, optimizer, evaluators, checkpoint formats and exact resume."""

    def __init__(self, cfg):
        amp_precision = self._amp_precision(cfg)
        self._train_sampler = None
        # Loaded once here: the epoch schedule is resolved from the size of exactly the list the
        # loader samples (after FILTER_EMPTY_ANNOTATIONS), and build_train_loader reuses it.
        # DATASETS.AVA.SKIP_BAD_SAMPLES: keyframes of videos that do not open are dropped and counted.
        with skip_bad_samples_at_load(cfg.DATASETS.AVA.SKIP_BAD_SAMPLES) as self._load_skips:
            self._train_dataset = get_detection_dataset_dicts(
                cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
            )
        cfg = cfg.clone()
        cfg.defrost()
        resolve_epoch_schedule(cfg, len(self._train_dataset))
        cfg.freeze()
        # DefaultTrainer.__init__'s steps, but with a DistributedDataParallel that also takes a CPU
        # model (detectron2's create_ddp_model passes device_ids=[rank], which DDP refuses there).
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):  # default_setup was not called
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        if comm.is_main_process() and cfg.OUTPUT_DIR:
            # default_setup saved the config before the schedule was resolved: save what runs.
            os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
            write_config(cfg, os.path.join(cfg.OUTPUT_DIR, "config.yaml"))
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        # Without deep supervision the earlier stages' class/box layers and the earlier decoder
        # layers' classifiers get no gradient, which DDP refuses unless told to look for them.
        model = create_ddp_model(model, broadcast_buffers=False, find_unused_parameters=not cfg.MODEL.EVAD.LOSS.DEEP_SUPERVISION)
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(model, data_loader, optimizer)
        if amp_precision is not None:
            self._trainer.precision = amp_precision
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        # Reads VideoMAE / official-EVAD weights too and saves the RNG states (exact resume).
        self._rng = RNGState()
        self.checkpointer = EVADCheckpointer(cfg, model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self), rng=self._rng)
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @staticmethod
    def _amp_precision(cfg):
        """The autocast dtype of SOLVER.AMP (None when off); checked before anything is loaded."""
        if not cfg.SOLVER.AMP.ENABLED:
            return None
        if not cfg.MODEL.DEVICE.startswith("cuda"):
            # detectron2's AMPTrainer runs CUDA autocast only.
            raise ValueError(
                f"SOLVER.AMP.ENABLED needs a CUDA device, but MODEL.DEVICE is {cfg.MODEL.DEVICE!r}: "
                "set SOLVER.AMP.ENABLED False to train on the CPU"
            )
        # The value was checked at load (config_check: "float16" or "bfloat16"), torch's dtype names.
        return getattr(torch, cfg.SOLVER.AMP.PRECISION)

    def build_hooks(self):
        # First: every process hands its RNG state to the main process before that one saves.
        # detectron2's PeriodicCheckpointer becomes one that also completes a finished run resumed
        # after a kill during its final save (saves model_final.pth again).
        return [GatherRNGStates(self._rng, self.cfg.SOLVER.CHECKPOINT_PERIOD)] + [
            ResumablePeriodicCheckpointer(h.checkpointer, h.period, file_prefix=h.file_prefix)
            if type(h) is hooks.PeriodicCheckpointer
            else h
            for h in super().build_hooks()
        ] + self._bad_sample_hooks()

    def _bad_sample_hooks(self):
        """With SKIP_BAD_SAMPLES: a summary of the skipped samples after every epoch and at the end."""
        counter = self._train_mapper.bad_samples
        if counter is None:
            return []
        per_epoch = BadSampleSummary.iters_per_epoch_for(len(self._train_dataset), self.cfg.SOLVER.IMS_PER_BATCH)
        return [BadSampleSummary(counter, per_epoch, self._load_skips)]

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    def build_train_loader(self, cfg):
        """Clips around annotated keyframes, from a sampler that can skip what a resumed run saw."""
        self._train_sampler = ResumableTrainingSampler(
            len(self._train_dataset), shuffle=True, seed=cfg.SEED if cfg.SEED >= 0 else None
        )
        self._train_mapper = ClipDatasetMapper(cfg, is_train=True)
        return build_detection_train_loader(
            # Like detectron2's MapDataset (a skipped bad sample is replaced by another), with a clear
            # error when every sample is bad.
            RetryMapDataset(self._train_dataset, self._train_mapper),
            mapper=None,
            sampler=self._train_sampler,
            total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
            aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        if self._train_sampler is not None:
            self._train_sampler.start = self.start_iter * (self.cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size())

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=ClipDatasetMapper(cfg, is_train=False, dataset_name=dataset_name))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        kind = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
        if kind == "ava":
            evaluators = [AVAEvaluator(dataset_name, output_folder, protocol=cfg.TEST.AVA_PROTOCOL)]
        elif kind == "ucf_jhmdb":
            evaluators = [UCFJHMDBEvaluator(dataset_name, output_folder, protocol=cfg.TEST.UCF_JHMDB_PROTOCOL)]
        else:
            raise NotImplementedError(f"no evaluator for dataset '{dataset_name}' (evaluator_type {kind!r}; expected 'ava' or 'ucf_jhmdb')")
        return DatasetEvaluators(evaluators) if len(evaluators) > 1 else evaluators[0]


def cpu_threads_for(cfg) -> int:
    """Intra-op threads of each CPU training process: its share of the cores (the cores over the
    processes on this machine) less its loader workers, at least 1.

    Oversubscribing the cores is catastrophic for EVAD's many small ops: with one of two cores
    busy, a quick-start step took 11.6 s with 2 threads and 0.83 s with 1 (measured).
    """
    return cpu_threads(cfg.DATALOADER.NUM_WORKERS)


def cpu_threads(num_workers: int) -> int:
    """:func:`cpu_threads_for` of a process with ``num_workers`` loader workers."""
    return max(1, (os.cpu_count() or 1) // comm.get_local_size() - num_workers)


def write_config(cfg, path: str) -> None:
    """``cfg`` as YAML at ``path``, atomically (a reader never sees a partial file)."""
    with atomic_write(path, "w") as f:
        f.write(cfg.dump())


def setup(args):
    """The checked config of detectron2's parsed ``args`` (``--config-file``, opts), with the
    loggers (console and OUTPUT_DIR/log.txt) and the CPU threads set up."""
    cfg = get_evad_cfg(args.config_file, args.opts)  # checks every value
    check_batch_split(cfg, comm.get_world_size())
    check_backend_for_device(cfg.MODEL.DEVICE)
    default_setup(cfg, args)
    # default_setup sets up detectron2's and fvcore's loggers only: evad_d2's messages (schedule,
    # mapper, skipped samples, per-class tables) go to the console and OUTPUT_DIR/log.txt too.
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="evad_d2")
    if cfg.MODEL.DEVICE == "cpu":
        torch.set_num_threads(min(torch.get_num_threads(), cpu_threads_for(cfg)))
        logger.info("CPU training with %d intra-op threads per process", torch.get_num_threads())
    return cfg


def train_and_evaluate(args, trainer_cls=EVADTrainer):
    """What ``python train_net.py ARGS`` runs in each process: train (``--resume``: continue the
    run in OUTPUT_DIR) and evaluate, or only evaluate MODEL.WEIGHTS with ``--eval-only``.

    Args:
        args: detectron2's ``default_argument_parser()`` result.
        trainer_cls: :class:`EVADTrainer` or a subclass.

    Returns:
        the evaluation results ({dataset: {task: metrics}}; after training only when the last
        evaluation ran), or None.
    """
    cfg = setup(args)
    if args.eval_only:
        model = trainer_cls.build_model(cfg)
        EVADCheckpointer(cfg, model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = trainer_cls.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    # DefaultTrainer.train() returns the final evaluation only when TEST.EXPECTED_RESULTS is set.
    return getattr(trainer, "_last_eval_results", None)
