"""The benchmarks' common row fields, console table and JSON file."""
import json
import os
from typing import List

import torch
from tabulate import tabulate

from evad_d2.utils.atomic_io import atomic_write

from .breakdown import FIELD_PREFIX, part_names
from .timing import machine_description

# The console table's columns for each (part, mode).
TABLE_COLUMNS = {
    ("backbone", "inference"): [
        "keep_rate", "tokens", "gflops", "gflops_ratio_vs_ref", "latency_ms", "clips_per_s", "frames_per_s", "speedup_vs_ref",
    ],
    ("model", "inference"): [
        "keep_rate", "tokens", "gflops", "gflops_ratio_vs_ref", "latency_ms", "clips_per_s", "frames_per_s", "speedup_vs_ref",
        "model_latency_ms", "model_frames_per_s", "model_speedup_vs_ref",
    ],
    ("model", "train"): [
        "keep_rate", "tokens", "gflops", "step_ms", "step_time_ratio_vs_ref", "clips_per_s", "activation_mb",
        "activation_ratio_vs_ref", "peak_memory_mb", "step_memory_mb", "memory_ratio_vs_ref",
    ],
    ("export", "inference"): [
        "keep_rate", "eager_latency_ms", "compiled_latency_ms", "compiled_speedup_vs_eager",
        "torchscript_latency_ms", "torchscript_speedup_vs_eager", "exported_program_latency_ms",
        "exported_program_speedup_vs_eager", "onnxruntime_latency_ms", "onnxruntime_speedup_vs_eager",
    ],
    ("loader", "train"): ["num_workers", "batch_size", "clips_per_s", "frames_per_s"],
}


def annotate(results: List[dict], part: str, mode: str, device: str, dtype: str) -> str:
    """Add ``part``, ``mode``, ``device`` (the machine, in words), ``dtype`` and ``torch`` to every
    row; returns the machine description."""
    machine = machine_description(device)
    for row in results:
        row.update(part=part, mode=mode, device=machine, dtype=dtype, torch=torch.__version__)
    return machine


def print_table(results: List[dict], part: str, mode: str, machine: str, batch_size: int, dtype: str) -> None:
    """A title line (part, mode, machine, input sizes, batch, dtype) and the (part, mode)'s columns."""
    cols = TABLE_COLUMNS[(part, mode)]
    size = f", input {results[0]['input_size']}" if "input_size" in results[0] else ""
    if "model_input_size" in results[0]:
        size += f" (network {results[0]['model_input_size']})"
    print(f"\n{part} {mode} on {machine}{size}, batch {batch_size}, {dtype}")
    print(tabulate([[r.get(c, "-") for c in cols] for r in results], headers=cols, floatfmt=".3f"))
    parts = part_names(results)
    if parts:
        print("\nmodel-only time per part (ms; median of a separate pass):")
        print(tabulate([[r["keep_rate"]] + [r[c] for c in parts] for r in results],
                       headers=["keep_rate"] + [c[len(FIELD_PREFIX):-len("_ms")] for c in parts], floatfmt=".1f"))


def write_json(results, path: str) -> None:
    """``results`` as indented JSON at ``path``, written atomically (its directory is created)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path, "w") as f:
        json.dump(results, f, indent=2)
