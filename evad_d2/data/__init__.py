"""Datasets, video decoding and the clip mapper.

Importing registers the builtin datasets (names only: no file is read until a dataset is used).
"""
from .bad_samples import BadSampleSummary, RetryMapDataset, skip_bad_samples_at_load
from .clip_mapper import ClipDatasetMapper
from .datasets import load_ava_dataset, load_ucf_jhmdb_dataset, register_ava, register_ucf_jhmdb
from .datasets.builtin import datasets_root as _datasets_root, register_all as _register_all
from .video import VideoReadError

__all__ = [
    "BadSampleSummary",
    "ClipDatasetMapper",
    "RetryMapDataset",
    "VideoReadError",
    "load_ava_dataset",
    "load_ucf_jhmdb_dataset",
    "register_ava",
    "register_ucf_jhmdb",
    "skip_bad_samples_at_load",
]

_register_all(_datasets_root())
