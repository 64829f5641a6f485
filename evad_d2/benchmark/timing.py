"""Timing framework of the benchmarks: one timer, interleaved repetitions, speed fields and ratios.

Repetitions are interleaved across the calls being compared (every repetition runs each call
once, in order), so drift of a noisy machine hits every call alike; medians are reported.
"""
import logging
import os
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

logger = logging.getLogger(__name__)


@dataclass
class BenchmarkSettings:
    """What every model benchmark is told (``tools/benchmark.py`` states the defaults).

    Attributes:
        keep_rates: keep rates rho to compare; the config's pruning blocks (those with keep rate
            < 1) get rho, the others stay at 1 (:func:`evad_d2.modeling.backbone.scaled_keep_rates`).
        input_size: (T, H, W) of the clip, or None for INPUT.NUM_FRAMES and a square of
            INPUT.MIN_SIZE_TEST.
        batch_size: clips per forward or training step.
        repeats: timed runs per keep rate (interleaved).
        warmup: untimed runs per keep rate first.
        device: torch device string ("cpu", "cuda", "cuda:1").
        dtype: "fp32", or "bf16"/"fp16" autocast (:data:`evad_d2.engine.PRECISIONS`).
        flops: count fvcore GFLOPs too.
    """

    keep_rates: List[float]
    input_size: Optional[Tuple[int, int, int]]
    batch_size: int
    repeats: int
    warmup: int
    device: str
    dtype: str
    flops: bool

    def clip_size(self, cfg) -> Tuple[int, int, int]:
        """(T, H, W): ``input_size``, or the config's frame count and a square test size."""
        return tuple(self.input_size or (cfg.INPUT.NUM_FRAMES, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST))


def timer(device: torch.device) -> Callable[[Callable[[], None]], float]:
    """Seconds one call takes; CUDA calls are timed with events after a synchronize."""
    if device.type == "cuda":

        def run(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            return start.elapsed_time(end) / 1000.0

    else:

        def run(fn):
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0

    return run


def time_interleaved(calls: Dict, repeats: int, warmup: int, device) -> Dict[object, List[float]]:
    """Seconds of each call per repetition; every repetition runs all calls once, in order.

    Args:
        calls: key -> zero-argument callable.
        repeats, warmup: timed and untimed (first) runs of each call.
        device: torch device the calls run on (selects the timer).

    Returns:
        key -> ``repeats`` durations in seconds.
    """
    run = timer(device)
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in calls}
    for r in range(repeats):
        for k, fn in calls.items():
            times[k].append(run(fn))
        logger.info("repetition %d/%d done", r + 1, repeats)
    return times


def speed_fields(seconds: List[float], batch_size: int, num_frames: int, prefix: str = "", unit: str = "latency") -> dict:
    """Median latency, every repetition, and the throughput the median gives.

    Returns ``{prefix}{unit}_ms``, ``{prefix}{unit}_all_ms``, ``{prefix}clips_per_s`` and
    ``{prefix}frames_per_s`` (= clips/s x ``num_frames``).
    """
    med = statistics.median(seconds)
    return {
        f"{prefix}{unit}_ms": med * 1000,
        f"{prefix}{unit}_all_ms": [x * 1000 for x in seconds],
        f"{prefix}clips_per_s": batch_size / med,
        f"{prefix}frames_per_s": batch_size * num_frames / med,
    }


def add_ratios(results: List[dict], fields: Sequence[Tuple[str, str]]) -> None:
    """``results[i][out] = results[i][key] / reference[key]``, the reference being keep rate 1.0
    (else the first row)."""
    ref = next((r for r in results if r["keep_rate"] == 1.0), results[0])
    for row in results:
        for key, out in fields:
            if key in row and key in ref:
                row[out] = row[key] / ref[key]


def machine_description(device: str) -> str:
    """The GPU's name, or the CPU's thread and core counts."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({torch.get_num_threads()} threads, {os.cpu_count()} cores)"
