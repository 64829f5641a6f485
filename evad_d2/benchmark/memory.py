"""Peak memory of a CPU training step, measured in a fresh process per keep rate.

Python's tracemalloc does not see torch's allocations, so the measure is the high-water mark of
the resident set (``ru_maxrss``) of a process that builds the model and batch of
:func:`evad_d2.benchmark.step.build_training` and runs two steps (the second step's forward runs
with gradients and optimizer state alive, the first's does not). A fresh process per keep rate
keeps one rate's peak from hiding the next. glibc is told to map every block of 64 KiB or more on
its own, so that freed tensors leave the resident set.

The parent calls :func:`cpu_training_memory`; each child runs this module::

    python -m evad_d2.benchmark.memory '{"config_file": ..., "opts": [...], "settings": {...},
                                         "keep_rate": 0.7, "threads": null}'

and prints one line ``EVAD_MEMORY_PROBE {"before_mb": ..., "peak_mb": ...}``.
"""
import dataclasses
import json
import logging
import os
import resource
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

import torch

from evad_d2.config import get_evad_cfg

from .step import build_training
from .timing import BenchmarkSettings

logger = logging.getLogger(__name__)

# Marks the line a probe process prints for its parent.
PROBE_TAG = "EVAD_MEMORY_PROBE"


def maxrss_mb() -> float:
    """High-water mark of this process's resident set, in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def measure_training_memory(cfg, settings: BenchmarkSettings, keep_rate: float, source: str = "the config") -> dict:
    """In this process: build the training step, run two at ``keep_rate``; ``{"before_mb", "peak_mb"}``
    (meaningful only in a fresh process: the high-water mark never goes down)."""
    _, _, step = build_training(cfg, settings, source)
    before = maxrss_mb()
    for _ in range(2):
        step(keep_rate)
    return {"before_mb": before, "peak_mb": maxrss_mb()}


def cpu_training_memory(config_file: str, opts: List[str], settings: BenchmarkSettings, keep_rates: Sequence[float],
                        threads: Optional[int] = None) -> Dict[float, dict]:
    """Run :func:`measure_training_memory` in one fresh process per keep rate (one at a time).

    Args:
        config_file, opts: the config, as :func:`get_evad_cfg` takes it (each child builds it).
        settings: the training benchmark's settings.
        threads: torch CPU threads of each child (None: torch's default).

    Returns:
        keep rate -> ``{"before_mb", "peak_mb"}``.
    """
    found = {}
    for rho in keep_rates:
        spec = {"config_file": config_file, "opts": list(opts), "settings": dataclasses.asdict(settings),
                "keep_rate": rho, "threads": threads}
        cmd = [sys.executable, "-m", __name__, json.dumps(spec)]
        # glibc then serves every allocation of 64 KiB or more with its own mapping and unmaps it
        # when freed, so the resident set follows the live tensors instead of the malloc arenas'
        # cached free space (other platforms ignore the variable).
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith(PROBE_TAG)]
        if out.returncode != 0 or not lines:
            raise RuntimeError(f"memory probe at keep rate {rho} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
        found[rho] = json.loads(lines[-1][len(PROBE_TAG):])
        logger.info("rho=%.2f: peak RSS %.0f MB (%.0f MB before the first step)", rho, found[rho]["peak_mb"], found[rho]["before_mb"])
    return found


def main(argv: Optional[List[str]] = None) -> None:
    """The probe process: one JSON argument (see the module docstring); prints the tagged line."""
    spec = json.loads((sys.argv[1:] if argv is None else argv)[0])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    settings = BenchmarkSettings(**spec["settings"])
    cfg = get_evad_cfg(spec["config_file"], spec["opts"])
    found = measure_training_memory(cfg, settings, spec["keep_rate"], spec["config_file"])
    print(PROBE_TAG, json.dumps(found), flush=True)


if __name__ == "__main__":
    main()
