"""Activation memory of a training step, counted exactly: the bytes autograd saves for backward.

:class:`SavedTensorCounter` hooks ``torch.autograd.graph.saved_tensors_hooks`` around a forward
and records every tensor autograd saves. At the end of the context it counts the storages of the
saved tensors still alive (held by the graph for backward), each storage once: views of one
storage (q, k and v of one ``qkv`` output; a weight's transpose) count once, at the storage's
size, and what a dead branch of the graph saved (freed before the forward ended) does not count.
Storages of the module's parameters and buffers are counted apart: they live whether or not
anything trains (under bf16/fp16 autocast the weights' cast copies are activations: the graph
holds them for backward). The count depends on the model and the input only, not on the allocator, the
machine or other processes (unlike the resident set or the CUDA caching allocator's peak).

Not seen: tensors a custom ``autograd.Function`` keeps as plain ``ctx`` attributes instead of
``ctx.save_for_backward``, and the insides of activation-checkpointed blocks (they are recomputed
in backward; their inputs are counted).
"""
import weakref
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor, nn

from evad_d2.engine import autocast_for
from evad_d2.modeling.backbone import scaled_keep_rates

__all__ = ["SavedTensorCounter", "activation_memory", "storage_key"]

_MB = 2**20


def storage_key(t: Tensor) -> Tuple[Tuple, int]:
    """``(key, bytes)`` of the memory ``t`` holds: its storage (device, address) and the storage's
    size; a tensor without a plain storage is keyed by its identity and sized by its elements."""
    try:
        storage = t.untyped_storage()
        return ("storage", str(t.device), storage.data_ptr()), storage.nbytes()
    except (RuntimeError, NotImplementedError, TypeError):
        return ("tensor", id(t)), t.numel() * t.element_size()


class SavedTensorCounter:
    """Context manager: what autograd saved for backward inside it, each storage once.

    Args:
        exclude: a module, or tensors, whose storages count as ``parameter_bytes`` instead of
            ``activation_bytes`` (its parameters and buffers).

    After the context: ``saved_bytes`` = ``activation_bytes`` + ``parameter_bytes`` (storages
    alive at the end of the context), ``num_storages``, ``num_saved`` (save events, views and
    dead ones included).

    Example::

        with SavedTensorCounter(model) as counted:
            loss = model(batch)
        counted.activation_bytes
    """

    def __init__(self, exclude=None):
        if isinstance(exclude, nn.Module):
            exclude = list(exclude.parameters()) + list(exclude.buffers())
        self._excluded = {storage_key(t)[0] for t in (exclude or ())}
        self._entries: List[Tuple[weakref.ref, Tuple, int]] = []
        self._hooks: Optional[torch.autograd.graph.saved_tensors_hooks] = None
        self.activation_bytes = self.parameter_bytes = self.num_storages = self.num_saved = 0

    @property
    def saved_bytes(self) -> int:
        return self.activation_bytes + self.parameter_bytes

    def _pack(self, t: Tensor) -> Tensor:
        # The graph holds a detached alias (same storage): holding ``t`` itself would tie a saved
        # output to its own grad_fn in a reference cycle, keeping dead branches alive until gc.
        alias = t.detach()
        key, nbytes = storage_key(alias)
        self._entries.append((weakref.ref(alias), key, nbytes))
        return alias

    @staticmethod
    def _unpack(t: Tensor) -> Tensor:
        return t

    def __enter__(self) -> "SavedTensorCounter":
        self._entries = []
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        self._hooks = None
        # Alive now = held by the graph; alive storages have distinct addresses unless shared.
        live: Dict[Tuple, int] = {}
        for ref, key, nbytes in self._entries:
            if ref() is not None:
                live[key] = nbytes
        self.num_saved = len(self._entries)
        self._entries = []
        self.num_storages = len(live)
        self.parameter_bytes = sum(n for k, n in live.items() if k in self._excluded)
        self.activation_bytes = sum(n for k, n in live.items() if k not in self._excluded)


def activation_memory(model: nn.Module, batch: List[dict], base: List[float], keep_rates: Iterable[float],
                      device, dtype: str = "fp32") -> Dict[float, dict]:
    """Per keep rate, the bytes saved for backward by the training forward (losses included) of
    ``model`` (in train mode) on ``batch``, under the ``dtype`` autocast of the training step.

    Args:
        base: the config's keep rates; each rate ``rho`` is :func:`scaled_keep_rates` of it.

    Returns:
        rate -> ``{"activation_mb", "saved_parameter_mb", "saved_storages"}`` (MiB = 2**20 bytes).
        The model is left at the last rate; no backward runs (the graph is dropped).
    """
    device = torch.device(device)
    found = {}
    for rho in keep_rates:
        model.set_keep_rates(scaled_keep_rates(base, rho))
        with autocast_for(device, dtype), SavedTensorCounter(model) as counted:
            losses = model(batch)
        del losses
        found[rho] = {
            "activation_mb": counted.activation_bytes / _MB,
            "saved_parameter_mb": counted.parameter_bytes / _MB,
            "saved_storages": counted.num_storages,
        }
    return found
