"""What EVAD's LazyConfig files (``configs/lazy/*.py``) call besides the modules' own classes, and
the checks of their ``train`` section.

A LazyConfig file defines ``model``, ``dataloader`` (``train``, ``test``, ``evaluator``),
``optimizer``, ``lr_multiplier`` and ``train`` (see ``configs/lazy/`` and
:mod:`evad_d2.engine.lazy_trainer`, which trains them). Two values are only known when training
starts and are filled in by the trainer: ``lr_multiplier.max_iter`` and
``lr_multiplier.iters_per_epoch`` (from ``train.max_epochs`` and the size of the training set),
and ``optimizer.params.model``.
"""
import logging
import os
import tempfile
from typing import List, Optional, Sequence

from detectron2.config import LazyConfig
from detectron2.data import MetadataCatalog
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler, ParamScheduler

from ..utils.atomic_io import atomic_write

__all__ = [
    "LazyConfigError",
    "TRAIN_KEYS",
    "dataset_action_ids",
    "load_lazy_config",
    "multistep_lr_multiplier",
    "write_lazy_config",
]

logger = logging.getLogger(__name__)

# The keys of a LazyConfig file's ``train`` dict the trainer reads (every one is required, so that
# no default hides here; the shipped files state them all).
TRAIN_KEYS = (
    "output_dir",  # OUTPUT_DIR
    "init_checkpoint",  # MODEL.WEIGHTS: any format EVADCheckpointer reads ("" for none)
    "device",  # MODEL.DEVICE
    "seed",  # SEED (-1: random)
    "max_epochs",  # SOLVER.MAX_EPOCHS (0: train max_iter iterations, lr_multiplier in iterations)
    "max_iter",  # SOLVER.MAX_ITER when max_epochs is 0 (else set from the epochs)
    "amp",  # dict(enabled, precision): SOLVER.AMP.ENABLED / PRECISION
    "ddp",  # dict(broadcast_buffers, find_unused_parameters) of DistributedDataParallel
    "checkpointer",  # dict(period, max_to_keep, skip_shape_mismatch, videomae_decoder_init, new_action_classes)
    "eval_period",  # TEST.EVAL_PERIOD (0: evaluate after training only)
    "log_period",  # iterations between metric writes (detectron2's DefaultTrainer: 20)
    "cudnn_benchmark",  # CUDNN_BENCHMARK (read by detectron2's default_setup)
)
_CHECKPOINTER_KEYS = ("period", "max_to_keep", "skip_shape_mismatch", "videomae_decoder_init", "new_action_classes")
_SECTIONS = ("model", "dataloader", "optimizer", "lr_multiplier", "train")


class LazyConfigError(ValueError):
    """A LazyConfig file lacks a section or key the trainer needs, or holds a bad value."""


def load_lazy_config(path: str, overrides: Sequence[str] = ()):
    """The LazyConfig of ``path`` with detectron2's ``key=value`` ``overrides`` applied, checked
    for every section and ``train`` key the trainer reads (a :class:`LazyConfigError` names the
    file and the key)."""
    cfg = LazyConfig.load(path)
    cfg = LazyConfig.apply_overrides(cfg, list(overrides))
    for section in _SECTIONS:
        if section not in cfg:
            raise LazyConfigError(f"{path}: no '{section}' defined (an EVAD LazyConfig needs {', '.join(_SECTIONS)})")
    for part in ("train", "test", "evaluator"):
        if part not in cfg.dataloader:
            raise LazyConfigError(f"{path}: no 'dataloader.{part}' defined")
    for key in TRAIN_KEYS:
        if key not in cfg.train:
            raise LazyConfigError(f"{path}: 'train.{key}' is missing (see evad_d2.engine.lazy.TRAIN_KEYS)")
    for key in _CHECKPOINTER_KEYS:
        if key not in cfg.train.checkpointer:
            raise LazyConfigError(f"{path}: 'train.checkpointer.{key}' is missing")
    if cfg.train.max_epochs < 0 or (cfg.train.max_epochs == 0 and not cfg.train.max_iter):
        raise LazyConfigError(
            f"{path}: train.max_epochs = {cfg.train.max_epochs}, train.max_iter = {cfg.train.max_iter}: "
            "give a positive train.max_epochs, or train.max_epochs=0 and a positive train.max_iter"
        )
    return cfg


def write_lazy_config(cfg, path: str) -> None:
    """``cfg`` as detectron2's LazyConfig YAML at ``path`` (loadable with ``load_lazy_config``),
    atomically (a reader never sees a partial file)."""
    with tempfile.TemporaryDirectory() as folder:
        staged = os.path.join(folder, os.path.basename(path))
        LazyConfig.save(cfg, staged)
        with open(staged, encoding="utf-8") as f:
            text = f.read()
    with atomic_write(path, "w") as f:
        f.write(text)


def dataset_action_ids(dataset_name: str) -> Optional[List[int]]:
    """The label-map ids of a registered dataset in model column order (its ``action_ids``
    metadata; None when it has none), for ``ClipDatasetMapper(action_ids=...)``."""
    ids = MetadataCatalog.get(dataset_name).get("action_ids", None)
    return None if ids is None else list(ids)


def multistep_lr_multiplier(
    *,
    max_iter: int,
    steps: Sequence[float],
    warmup: float,
    gamma: float,
    warmup_factor: float,
    warmup_method: str,
    rescale_interval: bool,
    iters_per_epoch: Optional[int] = None,
) -> ParamScheduler:
    """detectron2's WarmupMultiStepLR as a multiplier of the base lr, with ``steps`` and ``warmup``
    in epochs when ``iters_per_epoch`` is given (``train.max_epochs`` > 0: the trainer sets it), in
    iterations otherwise. An epoch value e becomes ``round(e * iters_per_epoch)`` iterations, as
    SOLVER.STEP_EPOCHS / WARMUP_EPOCHS do. Steps past ``max_iter`` are dropped with a warning.
    ``gamma``, ``warmup_factor``, ``warmup_method``, ``rescale_interval``: SOLVER.GAMMA,
    WARMUP_FACTOR, WARMUP_METHOD, RESCALE_INTERVAL (the config files state them).

    Returns:
        a ParamScheduler of the training progress in [0, 1): 1 after the warm-up, ``gamma ** k``
        after the k-th step.
    """
    if max_iter is None or max_iter <= 0:
        raise LazyConfigError(f"lr_multiplier.max_iter must be a positive number of iterations, got {max_iter}")
    if iters_per_epoch is not None:
        steps = [int(round(e * iters_per_epoch)) for e in steps]
        warmup = int(round(warmup * iters_per_epoch))
    steps = [int(s) for s in steps]
    if list(steps) != sorted(steps):
        raise LazyConfigError(f"lr_multiplier.steps must increase, got {list(steps)}")
    kept = [s for s in steps if s <= max_iter]
    if len(kept) != len(steps):
        logger.warning("lr_multiplier.steps %s: the steps past max_iter %d are ignored", steps, max_iter)
    schedule = MultiStepParamScheduler(values=[gamma**k for k in range(len(kept) + 1)], milestones=kept, num_updates=max_iter)
    return WarmupParamScheduler(schedule, warmup_factor, min(warmup / max_iter, 1.0), warmup_method, rescale_interval)
