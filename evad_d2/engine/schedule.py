"""Schedules given in epochs (the paper's) turned into detectron2's iteration-based keys."""
import logging
import math

from ..config_check import check_epoch_schedule

__all__ = ["resolve_epoch_schedule"]

logger = logging.getLogger(__name__)


def resolve_epoch_schedule(cfg, num_train_samples: int):
    """Set SOLVER.MAX_ITER, STEPS and WARMUP_ITERS from SOLVER.MAX_EPOCHS, STEP_EPOCHS, WARMUP_EPOCHS.

    Does nothing when SOLVER.MAX_EPOCHS is 0 (the iteration keys are used as given). The config
    must not be frozen. Returns the iterations per epoch (or None).
    """
    s = cfg.SOLVER
    if s.MAX_EPOCHS <= 0:
        return None
    if num_train_samples <= 0:
        raise ValueError(f"the training set {tuple(cfg.DATASETS.TRAIN)} is empty")
    check_epoch_schedule(cfg)
    iters_per_epoch = math.ceil(num_train_samples / s.IMS_PER_BATCH)
    s.MAX_ITER = int(round(s.MAX_EPOCHS * iters_per_epoch))
    s.STEPS = tuple(int(round(e * iters_per_epoch)) for e in s.STEP_EPOCHS)
    s.WARMUP_ITERS = int(round(s.WARMUP_EPOCHS * iters_per_epoch))
    logger.info(
        "schedule: %d samples, %d iterations/epoch -> MAX_ITER %d, STEPS %s, WARMUP_ITERS %d",
        num_train_samples, iters_per_epoch, s.MAX_ITER, s.STEPS, s.WARMUP_ITERS,
    )
    return iters_per_epoch
