#!/usr/bin/env python
"""Time the AVA frame-mAP evaluation at AVA v2.2 validation size, on one CPU core: reading and
scoring generated ground truth and detection CSVs per ``--boxes`` case, and with ``--evaluator``
``AVAEvaluator.evaluate`` on model outputs of the same size; wall and CPU seconds with the load
average go to ``--json``.

    python tools/benchmark_ava_eval.py --boxes 3 10 --evaluator --json benchmark_ava_eval.json

What is generated, timed and checked: :mod:`evad_d2.benchmark.ava_eval`.
"""
import argparse
import json
import os
import platform

import numpy as np

from evad_d2.benchmark.ava_eval import results_table, run_benchmark


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=900, help="keyframes per video")
    parser.add_argument("--boxes", type=int, nargs="+", default=[3, 10], help="detected boxes per keyframe, one case each")
    parser.add_argument("--protocols", nargs="+", default=["pyslowfast", "activitynet"])
    parser.add_argument("--evaluator", action="store_true", help="also time AVAEvaluator.evaluate per case")
    parser.add_argument("--cpu", type=int, default=0, help="pin the process to this CPU core (-1: no pinning)")
    parser.add_argument("--json", default="benchmark_ava_eval.json")
    parser.add_argument("--tmpdir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})

    load_before = os.getloadavg()
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    out = run_benchmark(videos=args.videos, seconds=args.seconds, boxes=args.boxes, protocols=args.protocols,
                        evaluator=args.evaluator, tmpdir=args.tmpdir, seed=args.seed)
    load_after = os.getloadavg()
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    print()
    print(results_table(out["results"]))
    out = dict(
        machine=platform.processor() or platform.machine(), python=platform.python_version(), numpy=np.__version__,
        cpu_affinity=sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        load_average_before=load_before, load_average_after=load_after, **out,
    )
    with open(args.json, "w") as f:
        json.dump(out, f, indent=2)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
