"""Mixed-precision inference and training: the names users pass and the autocast they mean.

``fp32`` runs in full precision; ``bf16`` and ``fp16`` run matrix products and convolutions under
``torch.autocast`` on the model's device (CUDA in production; the CPU supports both too, mostly
for testing). Parameters stay float32 and the model's outputs are float32 either way.
"""
import contextlib
from typing import Optional

import torch

__all__ = ["PRECISIONS", "autocast_for", "check_precision"]

# Name -> autocast dtype (None: no autocast).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(name: str, what: str = "precision") -> Optional[torch.dtype]:
    """The autocast dtype of ``name``; a ValueError naming ``what`` for anything else."""
    if name not in PRECISIONS:
        raise ValueError(f"{what} must be one of {sorted(PRECISIONS)}, got {name!r}")
    return PRECISIONS[name]


def autocast_for(device: torch.device, name: str):
    """``torch.autocast`` on ``device`` for precision ``name`` (a no-op context for fp32)."""
    dtype = check_precision(name)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
