"""Where the detector's inference time goes: its parts timed with forward hooks.

A separate pass after the timed runs (the hooks synchronise a CUDA device, which the timed runs
must not do). Each part is a submodule of the model, by qualified name; a part absent from a
model (a backbone without a ``net``) is left out. ``other`` is what the model's forward spends
outside its three top-level parts: normalisation and padding, the box and score post-processing.
"""
import statistics
import time
from typing import Callable, Dict, List, Sequence

import torch
from torch import nn

__all__ = ["FIELD_PREFIX", "PARTS", "part_fields", "part_names", "part_times"]

# (qualified name, what it is); the first is inside the second, the others are disjoint.
PARTS = (
    ("backbone.net", "the pruning ViT"),
    ("backbone", "the ViT and the simple FPN neck"),
    ("localization_head", "the query-based actor localization stages"),
    ("action_head", "the 3D RoIAlign and the context refinement decoder"),
)
# The model's own children among them: together with "other" they make up the whole call.
_TOP_LEVEL = tuple(name for name, _ in PARTS if "." not in name)
FIELD_PREFIX = "model_part_"


def _field(name: str, prefix: str) -> str:
    return f"{prefix}{name.replace('.', '_')}_ms"


def part_times(model: nn.Module, call: Callable[[], object], repeats: int, device: torch.device) -> Dict[str, float]:
    """Median milliseconds per part over ``repeats`` calls of ``call()`` (a forward of ``model``).

    Returns:
        ``{name: ms}`` for each of :data:`PARTS` the model has, ``"total"`` (the whole call) and
        ``"other"`` (per call the total minus the top-level parts; its median).
    """
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    modules = dict(model.named_modules())
    found = [name for name, _ in PARTS if name in modules]
    times: Dict[str, List[float]] = {name: [] for name in found + ["total"]}
    started: Dict[str, float] = {}
    handles = []

    def before(name):
        def hook(module, args):
            sync()
            started[name] = time.perf_counter()

        return hook

    def after(name):
        def hook(module, args, output):
            sync()
            times[name].append(time.perf_counter() - started.pop(name))

        return hook

    for name in found:
        handles.append(modules[name].register_forward_pre_hook(before(name)))
        handles.append(modules[name].register_forward_hook(after(name)))
    try:
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            call()
            sync()
            times["total"].append(time.perf_counter() - t0)
    finally:
        for h in handles:
            h.remove()
    calls = {name: len(v) for name, v in times.items()}
    if any(n != repeats for n in calls.values()):
        raise RuntimeError(f"each part should run once per call; calls per part over {repeats} calls: {calls}")
    # The rest per call, then its median (a difference of medians can come out negative).
    times["other"] = [t - sum(times[n][i] for n in _TOP_LEVEL if n in times) for i, t in enumerate(times["total"])]
    return {name: 1000.0 * statistics.median(v) for name, v in times.items()}


def part_fields(medians: Dict[str, float], prefix: str = FIELD_PREFIX) -> Dict[str, float]:
    """Flat row fields ``{prefix}{name}_ms`` (dots become underscores) of :func:`part_times`."""
    return {_field(name, prefix): ms for name, ms in medians.items()}


def part_names(results: Sequence[dict], prefix: str = FIELD_PREFIX) -> List[str]:
    """The part fields present in benchmark rows, in :data:`PARTS` order, then other and total."""
    keys = [_field(n, prefix) for n in [n for n, _ in PARTS] + ["other", "total"]]
    return [k for k in keys if results and k in results[0]]
