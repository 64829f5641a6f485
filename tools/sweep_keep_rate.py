#!/usr/bin/env python
"""Accuracy by keep rate: the paper's pruning rule against random dropping (paper Fig. 5).

Evaluates a trained model on a registered dataset at each keep rate (every pruning block of the
config gets it) with both rules of MODEL.EVAD.PRUNING_SCORE, counts the GFLOPs of each setting,
and writes OUTPUT/sweep.{json,png,md}: the rows, frame-mAP@0.5 against GFLOPs, and a Markdown table::

    python tools/sweep_keep_rate.py --config-file configs/quickstart/EVAD_tiny_ava_like_cpu.yaml \\
        --output output/sweep/attention_s1 MODEL.WEIGHTS output/qs_attention_s1/model_final.pth

Pass the overrides the model was trained with (MODEL.EVAD.PRUNING_SCORE random for a model trained
with random dropping): the sweep's label, ``trained: <rule>``, comes from them (or --label).
``--dataset NAME`` picks a registered dataset (default DATASETS.TEST[0]); ``--dataset-root DIR``
registers the AVA-format dataset at DIR (``--dataset-split``, ``--dataset-version``) and uses it.

Pool several trainings (seeds) into mean +- std per (label, rule, keep rate)::

    python tools/sweep_keep_rate.py --combine output/sweep/*/sweep.json --output output/sweep/summary
"""
import argparse
import os
from typing import List, Optional

from detectron2.utils.logger import setup_logger

from evad_d2 import get_evad_cfg
from evad_d2.evaluation.keep_rate_sweep import (
    DEFAULT_KEEP_RATES,
    combine_sweeps,
    load_sweep,
    register_dataset_root,
    sweep_keep_rates,
    sweep_table,
    write_sweep,
)
from evad_d2.modeling.backbone.pruning import PRUNING_SCORES


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", help="the model's config (required unless --combine)")
    p.add_argument("--dataset", default=None, help="registered dataset to evaluate on (default: DATASETS.TEST[0])")
    p.add_argument("--dataset-root", default=None, help="evaluate on the AVA-format dataset in this folder instead")
    p.add_argument("--dataset-split", default="val", help="--dataset-root's split")
    p.add_argument("--dataset-version", default="2.2", help="--dataset-root's AVA annotation version")
    p.add_argument("--keep-rates", type=float, nargs="+", default=list(DEFAULT_KEEP_RATES))
    p.add_argument("--rules", nargs="+", choices=list(PRUNING_SCORES), default=list(PRUNING_SCORES))
    p.add_argument("--gflops-size", type=int, nargs=3, default=None, metavar=("T", "H", "W"),
                   help="clip the GFLOPs are counted on (default: INPUT.NUM_FRAMES and MIN_SIZE_TEST square, padded as the model pads its input)")
    p.add_argument("--label", default=None, help="the sweep's name in combined tables (default: 'trained: <PRUNING_SCORE>')")
    p.add_argument("--combine", nargs="+", default=None, metavar="SWEEP_JSON", help="pool these sweeps instead of evaluating")
    p.add_argument("--output", default=None, help="output folder (default: OUTPUT_DIR/keep_rate_sweep; required with --combine)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ... (MODEL.WEIGHTS W)")
    return p


def main(argv: Optional[List[str]] = None) -> dict:
    p = get_parser()
    args = p.parse_args(argv)
    setup_logger(name="evad_d2")
    try:
        result, paths = run(p, args)
    except ValueError as e:  # bad input (dataset, weights, files): the message names it
        raise SystemExit(f"sweep_keep_rate.py: {e}")
    print(sweep_table(result))
    print("written: " + ", ".join(paths.values()))
    return result


def run(p: argparse.ArgumentParser, args):
    """``(sweep or summary, written paths)`` of the parsed ``args``."""
    if args.combine:
        if not args.output:
            p.error("--combine needs --output DIR")
        result = combine_sweeps([load_sweep(path) for path in args.combine], args.combine)
        paths = write_sweep(result, args.output, name="summary")
    else:
        if not args.config_file:
            p.error("--config-file is required (or --combine SWEEP_JSON ...)")
        cfg = get_evad_cfg(args.config_file, args.opts)
        dataset = args.dataset
        if args.dataset_root:
            dataset = register_dataset_root(args.dataset_root, args.dataset_split, args.dataset_version)
        output = args.output or os.path.join(cfg.OUTPUT_DIR, "keep_rate_sweep")
        result = sweep_keep_rates(cfg, dataset_name=dataset, keep_rates=args.keep_rates, rules=args.rules,
                                  gflops_size=args.gflops_size, output_dir=output, label=args.label, log=print)
        paths = write_sweep(result, output)
    return result, paths


if __name__ == "__main__":
    main()
