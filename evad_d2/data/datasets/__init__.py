"""Dataset registration: AVA-format (AVA v2.1/v2.2, the generated ava_like) and UCF101-24/JHMDB."""
from .ava import load_ava_dataset, register_ava
from .ava_layout import ava_files
from .metadata import LazyMetadata, fresh_metadata
from .ucf_jhmdb import load_ucf_jhmdb_dataset, register_ucf_jhmdb

__all__ = [
    "LazyMetadata",
    "ava_files",
    "fresh_metadata",
    "load_ava_dataset",
    "register_ava",
    "load_ucf_jhmdb_dataset",
    "register_ucf_jhmdb",
]
