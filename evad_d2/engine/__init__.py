from .optimizer import build_optimizer, build_param_groups, vit_layer_id
from .rng_state import RNGState
from .sampler import ResumableTrainingSampler
from .schedule import resolve_epoch_schedule

__all__ = ["RNGState", "ResumableTrainingSampler", "build_optimizer", "build_param_groups", "resolve_epoch_schedule", "vit_layer_id"]
