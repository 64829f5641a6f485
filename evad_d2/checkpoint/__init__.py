"""Loading and converting weights: VideoMAE backbones (also from Hugging Face), official EVAD releases,
our own checkpoints."""

from .checkpointer import EVADCheckpointer
from .common import (
    CheckpointFormatError,
    ConversionReport,
    DamagedCheckpointError,
    checkpoint_file_problem,
    find_state_dict,
    load_checkpoint_file,
    load_pickle_checkpoint,
    load_safetensors_file,
)
from .hf_videomae import hf_videomae_to_videomae, is_hf_videomae_state_dict, read_pretrained_folder
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
    "DamagedCheckpointError",
    "REQUIRED_OVERRIDES",
    "checkpoint_file_problem",
    "convert_videomae",
    "evad_d2_to_official",
    "find_state_dict",
    "hf_videomae_to_videomae",
    "is_hf_videomae_state_dict",
    "is_official_evad_state_dict",
    "is_videomae_state_dict",
    "load_checkpoint_file",
    "load_pickle_checkpoint",
    "load_safetensors_file",
    "official_config_overrides",
    "official_to_evad_d2",
    "read_pretrained_folder",
]
