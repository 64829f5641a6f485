"""Loading and converting weights: VideoMAE backbones, official EVAD releases, our own checkpoints."""

from .checkpointer import EVADCheckpointer
from .common import CheckpointFormatError, ConversionReport, find_state_dict, load_checkpoint_file
from .official_evad import (
    REQUIRED_OVERRIDES,
    evad_d2_to_official,
    is_official_evad_state_dict,
    official_config_overrides,
    official_to_evad_d2,
)
from .videomae import convert_videomae, is_videomae_state_dict

__all__ = [
    "EVADCheckpointer",
    "CheckpointFormatError",
    "ConversionReport",
    "REQUIRED_OVERRIDES",
    "convert_videomae",
    "evad_d2_to_official",
    "find_state_dict",
    "is_official_evad_state_dict",
    "is_videomae_state_dict",
    "load_checkpoint_file",
    "official_config_overrides",
    "official_to_evad_d2",
]
