"""Deployment speed by keep rate: the eager model against torch.compile, the exported graphs
(TorchScript, torch.export) and ONNX Runtime, for one clip (``tools/benchmark.py --part export``)."""
import copy
import importlib.util
import logging
import time
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from detectron2.modeling import build_model
from torch import Tensor

from evad_d2.engine import autocast_for
from evad_d2.engine.compilation import compile_model
from evad_d2.export import ExportableEVAD, OnnxRuntimeGraph, make_graph, onnxruntime_providers
from evad_d2.export.onnx_export import onnx_program
from evad_d2.modeling.backbone import scaled_keep_rates

from .inference import config_for_model
from .timing import BenchmarkSettings, speed_fields, time_interleaved

logger = logging.getLogger(__name__)

# Every kind the part can time; "eager" is the reference of the ``*_vs_eager`` fields.
GRAPH_KINDS = ("eager", "compiled", "torchscript", "exported_program", "onnxruntime")


def export_graph_kinds(compile: bool) -> Tuple[str, ...]:
    """The kinds ``--part export`` times: the exported graphs, ONNX Runtime where onnxruntime,
    onnx and onnxscript are installed, and torch.compile with ``compile`` (``--compile``)."""
    kinds = ["eager", "torchscript", "exported_program"]
    if all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime", "onnxscript")):
        kinds.append("onnxruntime")
    else:
        logger.warning("onnx, onnxruntime or onnxscript is not installed: no ONNX Runtime column (pip install 'evad-d2[onnx]')")
    if compile:
        kinds.insert(1, "compiled")
    return tuple(kinds)


def _max_abs_diff(expected: Sequence[Tensor], got: Sequence[Tensor]) -> float:
    """Max |difference| over the given outputs; inf when a shape differs (another actor count)."""
    diff = 0.0
    for a, b in zip(expected, got):
        b = torch.as_tensor(b).to(a.device)
        if a.shape != b.shape:
            return float("inf")
        if a.numel():
            diff = max(diff, float((a.float() - b.float()).abs().max()))
    return diff


def _make_call(kind: str, model, compiled, base: List[float], rho: float, size, clip: Tensor) -> Callable:
    """The clip -> (boxes, scores, action scores) callable of ``kind`` at keep rate ``rho``."""
    if kind in ("eager", "compiled"):
        subject = model if kind == "eager" else compiled
        wrapper = ExportableEVAD(subject, size)

        def run(x):
            subject.set_keep_rates(scaled_keep_rates(base, rho))  # calls of all rates interleave
            return wrapper(x)

        return run
    model.set_keep_rates(scaled_keep_rates(base, rho))
    wrapper = ExportableEVAD(model, size)
    if kind == "onnxruntime":
        # As many ONNX Runtime threads as torch has, so that the comparison is like for like.
        proto = onnx_program(wrapper, clip).model_proto.SerializeToString()
        return OnnxRuntimeGraph(proto, onnxruntime_providers(clip.device), num_threads=torch.get_num_threads())
    graph = make_graph(wrapper, clip, kind)
    return graph if kind == "torchscript" else graph.module()


def benchmark_export(cfg, settings: BenchmarkSettings, source: str = "the config", graphs: Optional[Sequence[str]] = None) -> List[dict]:
    """Latency and throughput of each of ``graphs`` (default :func:`export_graph_kinds` without
    torch.compile) for one (3, T, H, W) network-input clip, each graph made for the row's keep
    rate; per kind ``{kind}_latency_ms`` etc. (:func:`~.timing.speed_fields`), ``{kind}_prepare_s``
    (export or compile plus the first call), ``{kind}_max_abs_diff`` against the eager outputs on
    the timed clip (boxes in pixels included) and ``{kind}_max_score_diff`` (scores only), and
    ``{kind}_speedup_vs_eager``. ``source`` names the config in errors.

    Raises:
        SystemExit: ``settings.batch_size`` is not 1 (the graphs take one clip), or an unknown kind.
    """
    if settings.batch_size != 1:
        raise SystemExit("--part export times one clip per call (the exported graphs take one): use --batch-size 1")
    graphs = tuple(graphs or export_graph_kinds(compile=False))
    unknown = sorted(set(graphs) - set(GRAPH_KINDS))
    if unknown or "eager" not in graphs:
        raise SystemExit(f"--part export: graph kinds must include 'eager' and be among {list(GRAPH_KINDS)}, got {list(graphs)}")
    device = torch.device(settings.device)
    cfg = config_for_model(cfg, settings, source)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    compiled = compile_model(copy.deepcopy(model)) if "compiled" in graphs else None
    size = settings.clip_size(cfg)
    clip = (torch.rand(3, *size, generator=torch.Generator().manual_seed(0)) * 255).to(device)
    base = list(cfg.MODEL.EVAD.KEEP_RATES)

    results, calls = [], {}
    for rho in settings.keep_rates:
        row = {"keep_rate": rho, "input_size": list(size), "batch_size": 1, "graphs": list(graphs)}
        outputs = {}
        for kind in graphs:
            logger.info("rho=%.2f: preparing %s", rho, kind)
            start = time.perf_counter()
            fn = _make_call(kind, model, compiled, base, rho, size, clip)
            with torch.inference_mode(), autocast_for(device, settings.dtype):
                outputs[kind] = fn(clip)  # the first call: torch.compile compiles here
            row[f"{kind}_prepare_s"] = time.perf_counter() - start
            calls[(rho, kind)] = _timed(fn, clip, device, settings.dtype)
        for kind in graphs:
            # All outputs (boxes in pixels, so float32 rounding grows with the clip size), and the
            # person and action scores alone (probabilities: the 1e-4 criterion applies as it is).
            row[f"{kind}_max_abs_diff"] = _max_abs_diff(outputs["eager"], outputs[kind])
            row[f"{kind}_max_score_diff"] = _max_abs_diff(outputs["eager"][1:], outputs[kind][1:])
        results.append(row)
    times = time_interleaved(calls, settings.repeats, settings.warmup, device)
    for row in results:
        for kind in graphs:
            row.update(speed_fields(times[(row["keep_rate"], kind)], 1, size[0], prefix=f"{kind}_"))
        for kind in graphs[1:]:
            row[f"{kind}_speedup_vs_eager"] = row[f"{kind}_clips_per_s"] / row["eager_clips_per_s"]
    return results


def _timed(fn: Callable, clip: Tensor, device, dtype: str) -> Callable[[], None]:
    def call():
        with torch.inference_mode(), autocast_for(device, dtype):
            fn(clip)

    return call


__all__ = ["GRAPH_KINDS", "benchmark_export", "export_graph_kinds"]
