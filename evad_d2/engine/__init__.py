from .optimizer import build_optimizer, build_param_groups, vit_layer_id
from .precision import PRECISIONS, autocast_for, check_precision
from .rng_state import RNGState
from .sampler import ResumableTrainingSampler
from .schedule import resolve_epoch_schedule

__all__ = [
    "PRECISIONS",
    "RNGState",
    "ResumableTrainingSampler",
    "autocast_for",
    "build_optimizer",
    "build_param_groups",
    "check_precision",
    "resolve_epoch_schedule",
    "vit_layer_id",
]
