"""Dataset registration: AVA-format (AVA v2.1/v2.2, the generated ava_like) and UCF101-24/JHMDB."""
from .ava import LazyMetadata, ava_files, load_ava_dataset, register_ava
from .ucf_jhmdb import load_ucf_jhmdb_dataset, read_ucf_jhmdb_gt, register_ucf_jhmdb

__all__ = [
    "LazyMetadata",
    "ava_files",
    "load_ava_dataset",
    "register_ava",
    "load_ucf_jhmdb_dataset",
    "read_ucf_jhmdb_gt",
    "register_ucf_jhmdb",
]
