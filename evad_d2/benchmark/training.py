"""The training benchmark: step time by keep rate, the activation memory (bytes saved for
backward, counted exactly) and the peak memory of a step (the paper's Fig. 8)."""
import logging
from typing import Dict, List, Optional

import torch

from evad_d2.modeling.backbone import scaled_keep_rates

from .activations import activation_memory
from .inference import model_gflops, network_input
from .memory import cpu_training_memory
from .step import build_training
from .timing import BenchmarkSettings, add_ratios, speed_fields, time_interleaved

logger = logging.getLogger(__name__)

CUDA_MEMORY_METHOD = "torch.cuda.max_memory_allocated"
CPU_MEMORY_METHOD = "ru_maxrss of a fresh process per keep rate (2 steps)"
ACTIVATION_METHOD = "torch.autograd.graph.saved_tensors_hooks: bytes saved for backward by the training forward, each storage once, parameters apart"


def training_rows(model, batch: List[dict], settings: BenchmarkSettings, base: List[float]) -> List[dict]:
    """One row per keep rate: sizes, tokens and (with ``settings.flops``) the inference GFLOPs."""
    t, h, w = batch[0]["clip"].shape[1:]
    results = []
    for rho in settings.keep_rates:
        model.set_keep_rates(scaled_keep_rates(base, rho))
        size, tokens = network_input(model, batch)
        row = {"keep_rate": rho, "input_size": [t, h, w], "model_input_size": size, "batch_size": settings.batch_size,
               "tokens": tokens}
        if settings.flops:
            row.update(model_gflops(model, [{k: v for k, v in x.items() if k != "instances"} for x in batch]))
        results.append(row)
    return results


def add_memory_fields(row: dict, memory: Dict[float, dict], method: str) -> None:
    """``peak_memory_mb``, ``memory_before_step_mb``, ``step_memory_mb`` (= peak - before) and
    ``memory_method`` of the row's keep rate, if it was measured."""
    m = memory.get(row["keep_rate"])
    if m is not None:
        row.update(
            peak_memory_mb=m["peak_mb"], memory_before_step_mb=m["before_mb"],
            step_memory_mb=m["peak_mb"] - m["before_mb"], memory_method=method,
        )


def benchmark_training(cfg, settings: BenchmarkSettings, *, measure_memory: bool = True, config_file: Optional[str] = None,
                       opts: Optional[List[str]] = None, threads: Optional[int] = None) -> List[dict]:
    """One training step per keep rate: ``step_ms`` (median), ``step_all_ms``, ``clips_per_s``, the
    activation memory (``activation_mb``, ``saved_parameter_mb``, ``saved_storages``: see
    :func:`evad_d2.benchmark.activations.activation_memory`; exact, on any device) and
    peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over the rate's steps (reset before
    each step); on the CPU :func:`cpu_training_memory` (fresh processes, which rebuild the config
    from ``config_file`` and ``opts`` and use ``threads`` torch threads).
    """
    device = torch.device(settings.device)
    memory: Dict[float, dict] = {}
    # The probes run before the timing, so that they never compete with it for the CPU.
    if measure_memory and device.type == "cpu":
        memory = cpu_training_memory(config_file, opts or [], settings, settings.keep_rates, threads)
    source = config_file or "the config"
    model, batch, step = build_training(cfg, settings, source)
    base = list(cfg.MODEL.EVAD.KEEP_RATES)
    track_cuda = measure_memory and device.type == "cuda"
    if track_cuda:
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device) / 2**20
        memory = {rho: {"before_mb": before, "peak_mb": 0.0} for rho in settings.keep_rates}
    results = training_rows(model, batch, settings, base)
    activations = activation_memory(model, batch, base, settings.keep_rates, device, settings.dtype)
    for row in results:
        row.update(activations[row["keep_rate"]], activation_method=ACTIVATION_METHOD)

    def step_at(rho):
        def call():
            if track_cuda:
                torch.cuda.reset_peak_memory_stats(device)
            step(rho)
            if track_cuda:
                peak = torch.cuda.max_memory_allocated(device) / 2**20
                memory[rho]["peak_mb"] = max(memory[rho]["peak_mb"], peak)

        return call

    times = time_interleaved({rho: step_at(rho) for rho in settings.keep_rates}, settings.repeats, settings.warmup, device)
    t = batch[0]["clip"].shape[1]
    for row in results:
        row.update(speed_fields(times[row["keep_rate"]], settings.batch_size, t, unit="step"))
        add_memory_fields(row, memory, CUDA_MEMORY_METHOD if track_cuda else CPU_MEMORY_METHOD)
    add_ratios(
        results,
        [("clips_per_s", "speedup_vs_ref"), ("step_ms", "step_time_ratio_vs_ref"), ("peak_memory_mb", "memory_ratio_vs_ref"),
         ("activation_mb", "activation_ratio_vs_ref"), ("gflops", "gflops_ratio_vs_ref")],
    )
    return results
