from .distributed import check_backend_for_device, create_ddp_model
from .optimizer import build_optimizer, build_param_groups
from .precision import PRECISIONS, autocast_for, check_precision
from .rng_state import GatherRNGStates, RNGState
from .sampler import ResumableTrainingSampler
from .schedule import resolve_epoch_schedule

__all__ = [
    "GatherRNGStates",
    "PRECISIONS",
    "RNGState",
    "ResumableTrainingSampler",
    "autocast_for",
    "build_optimizer",
    "build_param_groups",
    "check_backend_for_device",
    "check_precision",
    "create_ddp_model",
    "resolve_epoch_schedule",
]
