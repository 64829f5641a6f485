#!/usr/bin/env python
"""Measure EVAD at several keep rates on this machine: the table a latency budget is chosen from.

Example:
    python tools/calibrate_keep_rate.py --config-file configs/quickstart/EVAD_tiny_ava_like_cpu.yaml \\
        --device cpu --output-dir output/keep_rate MODEL.WEIGHTS output/quickstart/model_final.pth

The config's pruning blocks (``MODEL.EVAD.KEEP_RATES`` < 1) get each keep rate 1.0, 0.9, ... down
to ``--min-keep-rate``; one clip of random uint8 frames goes through the predictor (test-time
resize, model, post-processing) per run, repetitions interleaved over the keep rates, medians
kept. Writes ``keep_rate_table.json`` ({"format", "device", "input_size": [T, H, W], "meta",
"rows": [{"keep_rate", "gflops", "latency_ms", "clips_per_s"}]}) and ``keep_rate_table.png``;
``tools/demo.py --latency-ms L --keep-rate-table .../keep_rate_table.json`` uses the table instead
of measuring at start. Speed does not depend on the weights.
"""
import argparse
import sys

from detectron2.utils.logger import setup_logger
from tabulate import tabulate

from evad_d2.demo.keep_rate import (
    CALIBRATION_MIN_KEEP_RATE,
    CALIBRATION_REPEATS,
    CALIBRATION_WARMUP,
    calibrate_keep_rate,
)


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: MODEL.DEVICE)")
    p.add_argument("--output-dir", default="output/keep_rate", help="folder of keep_rate_table.json and .png")
    p.add_argument("--min-keep-rate", type=float, default=CALIBRATION_MIN_KEEP_RATE, help="lowest keep rate measured")
    p.add_argument("--step", type=float, default=0.1, help="keep-rate step from 1.0 down")
    p.add_argument("--frame-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="decoded frame size (default: a square of INPUT.MIN_SIZE_TEST)")
    p.add_argument("--repeats", type=int, default=CALIBRATION_REPEATS, help="timed runs per keep rate")
    p.add_argument("--warmup", type=int, default=CALIBRATION_WARMUP, help="untimed runs per keep rate first")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ... (e.g. MODEL.WEIGHTS W)")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="evad_d2")
    try:
        table, json_path, png_path = calibrate_keep_rate(
            args.config_file, args.opts, output_dir=args.output_dir, device=args.device, floor=args.min_keep_rate,
            step=args.step, frame_size=args.frame_size, repeats=args.repeats, warmup=args.warmup,
        )
    except ValueError as e:
        print(f"calibrate_keep_rate.py: error: {e}", file=sys.stderr)
        return 2
    cols = ["keep_rate", "gflops", "latency_ms", "clips_per_s"]
    print(f"\n{table.device}, clip {table.input_size[0]}x{table.input_size[1]}x{table.input_size[2]}")
    print(tabulate([[r[c] for c in cols] for r in table.rows], headers=cols, floatfmt=".3f"))
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
