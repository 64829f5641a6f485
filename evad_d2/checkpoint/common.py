"""Pieces shared by the checkpoint converters: reading a file safely, finding its state dict, and the
conversion report that says what went where.
"""

import argparse
import dataclasses
import logging
import pickle
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor

__all__ = [
    "CheckpointFormatError",
    "ConversionReport",
    "load_checkpoint_file",
    "find_state_dict",
    "strip_prefix",
]

# Containers the known trainers wrap a state dict in: detectron2 and VideoMAE pretraining use
# "model", VideoMAE fine-tuning "module", PySlowFast (the official EVAD) "model_state".
_CONTAINER_KEYS = ("model", "module", "model_state", "state_dict")


class CheckpointFormatError(ValueError):
    """A checkpoint file that cannot be read, recognised or mapped onto the model."""


@dataclasses.dataclass
class ConversionReport:
    """What a conversion did, for the log and the converter tool.

    Attributes:
        source_format: human-readable name of the input format.
        mapped: (source key, target key) for every tensor passed on.
        transformed: (target key, source shape, target shape, why) for tensors whose values or
            shapes were changed on the way.
        ignored: source key -> reason, for tensors deliberately not loaded.
        notes: anything the user should know (e.g. a layer left at its initialisation).
        warnings: things that probably make the model compute something else than intended.
    """

    source_format: str
    mapped: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    transformed: List[Tuple[str, Tuple[int, ...], Tuple[int, ...], str]] = dataclasses.field(default_factory=list)
    ignored: Dict[str, str] = dataclasses.field(default_factory=dict)
    notes: List[str] = dataclasses.field(default_factory=list)
    warnings: List[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        """Multi-line text: counts, transformations, ignored keys grouped by reason, notes."""
        lines = [f"{self.source_format}: {len(self.mapped)} tensors mapped, {len(self.ignored)} ignored"]
        for key, src, dst, why in self.transformed:
            lines.append(f"  transformed {key}: {tuple(src)} -> {tuple(dst)} ({why})")
        by_reason: Dict[str, List[str]] = {}
        for key, reason in self.ignored.items():
            by_reason.setdefault(reason, []).append(key)
        for reason, keys in by_reason.items():
            shown = ", ".join(keys[:6]) + (f", ... ({len(keys)} keys)" if len(keys) > 6 else "")
            lines.append(f"  ignored ({reason}): {shown}")
        lines.extend(f"  note: {n}" for n in self.notes)
        lines.extend(f"  WARNING: {w}" for w in self.warnings)
        return "\n".join(lines)

    def log(self, logger: logging.Logger) -> None:
        logger.info(self.summary())
        for w in self.warnings:
            logger.warning(w)


def load_checkpoint_file(path: str) -> Any:
    """``torch.load`` on the CPU without executing arbitrary pickled code.

    VideoMAE checkpoints carry their command-line ``argparse.Namespace``; that class is allowed,
    anything else that is not a tensor container makes a clear error rather than running code.
    """
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError) as e:
        raise CheckpointFormatError(
            f"{path}: cannot be read as a tensor checkpoint with torch.load(weights_only=True): {e}\n"
            "If you trust this file, re-save its state dict, e.g. "
            "torch.save(torch.load(path, weights_only=False)['model'], 'clean.pth'), and load that."
        ) from e


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    )


def find_state_dict(obj: Any, source: str = "checkpoint") -> Tuple[Dict[str, Tensor], Optional[str]]:
    """The state dict inside a loaded checkpoint object.

    Looks at the object itself, then (recursively) under the container keys ``model``, ``module``,
    ``model_state`` and ``state_dict``. Non-tensor entries of a state dict (e.g. a stray
    ``num_batches_tracked`` int) are not expected in the formats handled here and make it fail.

    Args:
        obj: what ``torch.load`` returned.
        source: name of the file, for error messages.

    Returns:
        (state dict, the container key it was found under or None for a raw state dict).
    """
    if _is_state_dict(obj):
        return dict(obj), None
    if isinstance(obj, Mapping):
        for key in _CONTAINER_KEYS:
            if key in obj:
                inner = obj[key]
                if _is_state_dict(inner):
                    return dict(inner), key
                if isinstance(inner, Mapping):
                    sd, _ = find_state_dict(inner, source)
                    return sd, key
        top = sorted(str(k) for k in obj.keys())[:12]
        raise CheckpointFormatError(
            f"{source}: no state dict found: top-level keys {top} contain neither tensors only nor one of "
            f"the containers {list(_CONTAINER_KEYS)}"
        )
    raise CheckpointFormatError(f"{source}: expected a dict of tensors, got {type(obj).__name__}")


def strip_prefix(state_dict: Mapping[str, Tensor], prefix: str) -> Dict[str, Tensor]:
    """Remove ``prefix`` from every key that has it (other keys are kept as they are)."""
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state_dict.items()}
