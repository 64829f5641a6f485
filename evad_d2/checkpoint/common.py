"""Pieces shared by the checkpoint converters: reading a file safely, finding its state dict, and the
conversion report that says what went where.

No reader here runs code from the file it reads: torch files go through
``torch.load(weights_only=True)``, ``.pkl`` files through the restricted unpickler of
:mod:`evad_d2.utils.safe_pickle`. A file that cannot be read (empty, truncated, text) is a
:class:`DamagedCheckpointError` naming the file and what is wrong with it.
"""

import argparse
import dataclasses
import logging
import os
import pickle
import zipfile
import zlib
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors
from torch import Tensor

from ..utils.safe_pickle import UnreadablePickleError, UnsafePickleError, restricted_load

__all__ = [
    "CheckpointFormatError",
    "ConversionReport",
    "DamagedCheckpointError",
    "checkpoint_file_problem",
    "load_checkpoint_file",
    "load_pickle_checkpoint",
    "load_safetensors_file",
    "find_state_dict",
    "find_submodule",
    "strip_prefix",
]

# Containers the known trainers wrap a state dict in: detectron2 and VideoMAE pretraining use
# "model", VideoMAE fine-tuning "module", PySlowFast (the official EVAD) "model_state".
_CONTAINER_KEYS = ("model", "module", "model_state", "state_dict")


class CheckpointFormatError(ValueError):
    """A checkpoint file that cannot be read, recognised or mapped onto the model."""


class DamagedCheckpointError(CheckpointFormatError):
    """A checkpoint file that is not readable at all: empty, truncated, text, not a checkpoint.

    Unlike its parent (a readable file of a refused or unknown kind), this is what an interrupted
    write or copy leaves, so a resume may fall back to an older checkpoint.
    """


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


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6
_PICKLE_PROTO = b"\x80"  # torch's legacy format, and pickles of protocol >= 2


def _text_head(head: bytes) -> Optional[str]:
    """The first line of ``head`` if it reads as text, else None."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(not (c.isprintable() or c in "\t\r\n") for c in text):
        return None
    return text.strip().splitlines()[0][:60] if text.strip() else text[:60]


def checkpoint_file_problem(path: str, *, verify_crc: bool = False) -> Optional[str]:
    """What is wrong with the torch checkpoint file ``path``, found without reading it whole.

    Catches what interrupted writes and mix-ups leave: a missing or empty file, a zip archive
    (torch's format) without its end (truncated: the archive's directory is at the end), text
    or other bytes that are neither a zip archive nor a pickle. A file that passes may still be
    damaged inside; only loading it tells, or ``verify_crc``: every record of a zip checkpoint is
    read and checked against its CRC-32 (torch.load does not, and loads a flipped bit in the tensor
    data as a silently different weight; about as fast as the load).

    Returns:
        None if the file looks complete, else a phrase to follow the file name ("is empty ...").
    """
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return "does not exist"
    if size == 0:
        return "is empty (0 bytes): a save that was interrupted (killed, full disk) or an incomplete copy"
    with open(path, "rb") as f:
        head = f.read(256)
    if head.startswith(_ZIP_MAGIC):
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            return (
                f"is truncated or damaged ({size} bytes; the end of the zip archive torch.save writes "
                f"cannot be read: {e}): a save that was interrupted or an incomplete copy"
            )
        with archive:
            names = archive.namelist()
            if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
                return f"is a zip archive but not a PyTorch checkpoint (no data.pkl among {names[:5]})"
            return _zip_crc_problem(archive) if verify_crc else None
    if head.startswith(_PICKLE_PROTO):
        return None
    text = _text_head(head)
    if text is not None:
        return f"is a text file, not a checkpoint (it starts with {text!r})"
    return f"is neither a PyTorch checkpoint nor a pickle (it starts with the bytes {head[:8].hex(' ')})"


def _zip_crc_problem(archive: zipfile.ZipFile) -> Optional[str]:
    """The first record of ``archive`` whose bytes fail its CRC-32, as a phrase; None if all pass."""
    for info in archive.infolist():
        try:
            with archive.open(info) as member:
                while member.read(1 << 24):
                    pass
        except (zipfile.BadZipFile, EOFError, zlib.error) as e:
            return f"is damaged: its record {info.filename} fails the zip archive's check ({e})"
    return None


def _torch_load_weights_only(path: str) -> Any:
    # VideoMAE checkpoints carry their command-line argparse.Namespace (plain data once unpickled).
    if hasattr(torch.serialization, "safe_globals"):  # torch >= 2.5
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint_file(path: str) -> Any:
    """``torch.load`` on the CPU without executing arbitrary pickled code.

    VideoMAE checkpoints carry their command-line ``argparse.Namespace``; that class is allowed,
    anything else that is not a tensor container makes a clear error rather than running code.

    Every record of the zip archive is checked against its CRC-32 first (torch.load does not).

    A ``.safetensors`` file (Hugging Face) is read with the ``safetensors`` package, which holds
    tensors only and runs no code.

    Raises:
        FileNotFoundError: no file at ``path``.
        DamagedCheckpointError: empty, truncated, text, corrupted (CRC), or otherwise unreadable.
        CheckpointFormatError: a readable file that needs globals ``weights_only`` refuses.
    """
    if str(path).endswith(".safetensors"):
        return load_safetensors_file(path)
    problem = checkpoint_file_problem(path, verify_crc=True)
    if problem == "does not exist":
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    if problem is not None:
        raise DamagedCheckpointError(f"{path} {problem}")
    try:
        return _torch_load_weights_only(path)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise DamagedCheckpointError(f"{path}: damaged checkpoint, not a readable pickle: {e}") from e
        raise CheckpointFormatError(
            f"{path}: cannot be read as a tensor checkpoint with torch.load(weights_only=True): {e}\n"
            "If you trust this file, re-save its state dict, e.g. "
            "torch.save(torch.load(path, weights_only=False)['model'], 'clean.pth'), and load that."
        ) from e
    except Exception as e:
        # What torch raises on damaged contents varies: "PytorchStreamReader failed ...", EOFError,
        # "[Errno 22] Invalid argument", "pop from empty list", struct.error, ...
        raise DamagedCheckpointError(
            f"{path}: damaged checkpoint ({os.path.getsize(path)} bytes), torch.load fails with "
            f"{type(e).__name__}: {e}"
        ) from e


def load_safetensors_file(path: str) -> Dict[str, Tensor]:
    """The tensors of a ``.safetensors`` file, on the CPU (the format holds no code).

    Raises:
        FileNotFoundError: no file at ``path``.
        DamagedCheckpointError: a file the safetensors reader rejects (empty, truncated, not safetensors).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    try:
        return load_safetensors(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise DamagedCheckpointError(
            f"{path}: damaged or not a safetensors file ({os.path.getsize(path)} bytes): {e}"
        ) from e


def _check_array_state_dict(model: Any, path: str) -> None:
    if not isinstance(model, Mapping):
        raise CheckpointFormatError(f"{path}: the model weights must be a dict of numpy arrays, got {type(model).__name__}")
    for key, value in model.items():
        if not isinstance(key, str):
            raise CheckpointFormatError(f"{path}: weight names must be strings, got {key!r}")
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biufc":
            what = f"array of dtype {value.dtype}" if isinstance(value, np.ndarray) else type(value).__name__
            raise CheckpointFormatError(
                f"{path}: weight {key!r} is a {what}; a .pkl checkpoint holds numeric numpy arrays only"
            )


def load_pickle_checkpoint(path: str) -> Dict[str, Any]:
    """A model-zoo ``.pkl`` (detectron2, Detectron/Caffe2), read with the restricted unpickler.

    Same result as detectron2's ``DetectionCheckpointer._load_file``, without running code:

    * ``{"model": {name: ndarray}, "__author__": ..., ...}`` (detectron2 model zoo) is returned as
      it is (with its ``matching_heuristics`` flag, if any);
    * a Detectron/Caffe2 file (``blobs``, or a bare dict with Caffe2 names such as ``res2_0_branch2a_w``):
      the weights without the ``*_momentum`` entries, as
      ``{"model": ..., "__author__": "Caffe2", "matching_heuristics": True}``;
    * a bare dict with PyTorch names (``backbone.net.blocks.0.attn.qkv.weight``): loaded by the same
      name-matching heuristics but without Caffe2's renaming. (detectron2 renames these as Caffe2
      names too, which silently loads a fraction of them.)

    Raises:
        FileNotFoundError: no file at ``path``.
        DamagedCheckpointError: empty, truncated or not a pickle.
        CheckpointFormatError: a pickle that needs anything but containers, numbers, strings and
            numpy arrays (it could run code), or weights that are not numeric numpy arrays.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    if os.path.getsize(path) == 0:
        raise DamagedCheckpointError(f"{path} is empty (0 bytes): a save that was interrupted or an incomplete copy")
    try:
        data = restricted_load(path, source=path)
    except UnreadablePickleError as e:
        raise DamagedCheckpointError(f"{e}: the file is damaged (truncated?) or not a .pkl checkpoint") from None
    except UnsafePickleError as e:
        raise CheckpointFormatError(str(e)) from None
    if not isinstance(data, Mapping):
        raise CheckpointFormatError(f"{path}: a .pkl checkpoint holds a dict, got {type(data).__name__}")
    if "model" in data and "__author__" in data:
        out = dict(data)
    elif "blobs" not in data and any(isinstance(k, str) and "." in k for k in data):
        out = {"model": dict(data), "__author__": f"{os.path.basename(path)} (a bare dict)", "matching_heuristics": True}
    else:
        # Detectron detection models keep their weights under "blobs", ImageNet models do not.
        blobs = data.get("blobs", data)
        if not isinstance(blobs, Mapping):
            raise CheckpointFormatError(f"{path}: 'blobs' must be a dict of numpy arrays, got {type(blobs).__name__}")
        model = {k: v for k, v in blobs.items() if not (isinstance(k, str) and k.endswith("_momentum"))}
        out = {"model": model, "__author__": "Caffe2", "matching_heuristics": True}
    _check_array_state_dict(out["model"], path)
    return out


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


def find_submodule(model: torch.nn.Module, cls) -> Tuple[Optional[str], Optional[torch.nn.Module]]:
    """(prefix with trailing dot, module) of the first submodule of ``model`` of type ``cls``
    (``("", model)`` for the model itself); (None, None) if there is none."""
    for name, module in model.named_modules():
        if isinstance(module, cls):
            return (name + "." if name else ""), module
    return None, None


def strip_prefix(state_dict: Mapping[str, Tensor], prefix: str) -> Dict[str, Tensor]:
    """Remove ``prefix`` from every key that has it (other keys are kept as they are)."""
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state_dict.items()}
