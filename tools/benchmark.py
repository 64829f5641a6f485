#!/usr/bin/env python
"""Speed and cost of EVAD by keep rate, measured in one run (the machines are noisy).

Example:
    python tools/benchmark.py --config-file configs/AVA/v2.2/EVAD_ViT-B_K400_rho0.7_224.yaml \\
        --part backbone --keep-rates 1.0 0.9 0.8 0.7 0.6 --input-size 16 224 224 --json out.json

For every keep rate rho, the pruning blocks of the config (those with keep rate < 1) get rho and
the others stay at 1. The same weights and the same input serve every rate; repetitions are
interleaved across rates and medians reported, so drift of the machine hits all rates alike.

GFLOPs are fvcore multiply-adds with attention counted. ``gflops`` counts the method (each
attention map computed once, as the paper counts); ``gflops_executed`` counts what the fast
pruning kernel runs (it recomputes QK^T columns from the log-sum-exp; see attention.py).
"""
import argparse
import json
import logging
import os
import statistics
import sys
import time
from typing import Callable, Dict, List

import torch
from detectron2.modeling import build_backbone
from detectron2.utils.logger import setup_logger
from tabulate import tabulate

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from evad_d2 import get_evad_cfg  # noqa: E402
from evad_d2.modeling.backbone import scaled_keep_rates  # noqa: E402
from evad_d2.utils.flops import flop_count_analysis, method_flops  # noqa: E402

logger = logging.getLogger("evad_d2.benchmark")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--part", choices=["backbone"], default="backbone", help="what to time: the pruning ViT alone")
    p.add_argument("--keep-rates", type=float, nargs="+", default=[1.0, 0.9, 0.8, 0.7, 0.6])
    p.add_argument("--input-size", type=int, nargs=3, default=None, metavar=("T", "H", "W"))
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5, help="timed runs per keep rate (interleaved)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per keep rate first")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast dtype")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-flops", action="store_true", help="skip the fvcore FLOP count")
    p.add_argument("--json", default=None, help="write the results here (a list, one object per keep rate)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return p


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


def time_interleaved(calls: Dict[float, Callable[[], None]], repeats: int, warmup: int, device) -> Dict[float, List[float]]:
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


def benchmark_backbone(cfg, args) -> List[dict]:
    device = torch.device(args.device)
    vit = build_backbone(cfg).net.to(device).eval()
    t, h, w = args.input_size or (cfg.INPUT.NUM_FRAMES, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST)
    torch.manual_seed(0)
    clip = torch.randn(args.batch_size, 3, t, h, w, device=device)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    base = list(cfg.MODEL.EVAD.KEEP_RATES)

    def forward_at(rho):
        def fn():
            vit.set_keep_rates(scaled_keep_rates(base, rho))
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                vit(clip)

        return fn

    results = []
    for rho in args.keep_rates:
        vit.set_keep_rates(scaled_keep_rates(base, rho))
        row = {"keep_rate": rho, "input_size": [t, h, w], "batch_size": args.batch_size, "tokens": vit.token_counts(clip.shape)[-1]}
        if not args.no_flops:
            with torch.no_grad():
                row["gflops_executed"] = flop_count_analysis(vit, (clip,)).total() / 1e9 / args.batch_size
                with method_flops(vit):
                    row["gflops"] = flop_count_analysis(vit, (clip,)).total() / 1e9 / args.batch_size
            logger.info("rho=%.2f: %.1f GFLOPs (%.1f executed)", rho, row["gflops"], row["gflops_executed"])
        results.append(row)

    times = time_interleaved({rho: forward_at(rho) for rho in args.keep_rates}, args.repeats, args.warmup, device)
    for row in results:
        med = statistics.median(times[row["keep_rate"]])
        row.update(
            latency_ms=med * 1000,
            latency_all_ms=[x * 1000 for x in times[row["keep_rate"]]],
            clips_per_s=args.batch_size / med,
            frames_per_s=args.batch_size * t / med,
        )
    ref = next((r for r in results if r["keep_rate"] == 1.0), results[0])
    for row in results:
        row["speedup_vs_ref"] = row["clips_per_s"] / ref["clips_per_s"]
        if "gflops" in row:
            row["gflops_ratio_vs_ref"] = row["gflops"] / ref["gflops"]
    return results


def machine_description(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({torch.get_num_threads()} threads, {os.cpu_count()} cores)"


def main(argv=None) -> List[dict]:
    args = get_parser().parse_args(argv)
    setup_logger(name="evad_d2")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = get_evad_cfg(args.config_file, args.opts)
    results = benchmark_backbone(cfg, args)
    machine = machine_description(args.device)
    for row in results:
        row.update(part=args.part, device=machine, dtype=args.dtype, torch=torch.__version__)
    cols = ["keep_rate", "tokens", "gflops", "gflops_ratio_vs_ref", "latency_ms", "clips_per_s", "frames_per_s", "speedup_vs_ref"]
    print(f"\n{args.part} on {machine}, input {results[0]['input_size']}, batch {args.batch_size}, {args.dtype}")
    print(tabulate([[r.get(c, "-") for c in cols] for r in results], headers=cols, floatfmt=".3f"))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
