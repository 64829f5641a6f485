#!/usr/bin/env python
"""Parameters and GFLOPs of an EVAD model, in total and per part (detectron2's analyze_model).

Example:
    python tools/analyze_model.py --config-file configs/AVA/v2.2/EVAD_ViT-B_K400_rho0.7_224.yaml \\
        --tasks parameter flop --input-size 16 224 224 --json out.json

Parts: ``backbone`` (the pruning ViT), ``neck`` (simple FPN), ``localization_head`` (proposals
included), ``action_head``. GFLOPs are fvcore multiply-adds with attention and RoIAlign counted,
for one clip in inference; ``--keep-rates`` repeats the FLOP count at other keep rates of the
config's pruning blocks.
"""
import argparse
import json
import logging
import os
import sys
from typing import Dict, List

import torch
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger
from fvcore.nn import parameter_count_table
from tabulate import tabulate

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from evad_d2 import get_evad_cfg  # noqa: E402
from evad_d2.modeling.backbone import scaled_keep_rates  # noqa: E402
from evad_d2.utils.flops import flop_count_analysis, method_flops  # noqa: E402

logger = logging.getLogger("evad_d2.analyze_model")

# The paper's whole-model GFLOPs for ViT-B at 16x224x224 (Table 2a).
PAPER_GFLOPS_VIT_B_224 = {1.0: 223.8, 0.9: 186.3, 0.8: 157.0, 0.7: 134.2, 0.6: 116.3}


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--tasks", nargs="+", choices=["parameter", "flop"], default=["parameter"])
    p.add_argument("--input-size", type=int, nargs=3, default=None, metavar=("T", "H", "W"))
    p.add_argument("--keep-rates", type=float, nargs="*", default=None, help="FLOPs at these keep rates too")
    p.add_argument("--json", default=None)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return p


def part_modules(model) -> Dict[str, List[str]]:
    """Module-name prefixes making up each part."""
    return {
        "backbone": ["backbone.net"],
        "neck": [f"backbone.{n}" for n, _ in model.backbone.named_children() if n != "net"],
        "localization_head": ["localization_head"],
        "action_head": ["action_head"],
    }


def count_parameters(model) -> Dict[str, int]:
    counts = {"total": sum(p.numel() for p in model.parameters())}
    for part, prefixes in part_modules(model).items():
        counts[part] = sum(
            p.numel() for n, p in model.named_parameters() if any(n == q or n.startswith(q + ".") for q in prefixes)
        )
    return counts


def count_gflops(model, clip_size) -> Dict[str, float]:
    t, h, w = clip_size
    torch.manual_seed(0)
    inputs = [{"clip": torch.rand(3, t, h, w) * 255, "height": h, "width": w}]
    with torch.no_grad(), method_flops(model):
        analysis = flop_count_analysis(model, inputs)
        # detectron2's tracing adapter holds the model as its "model" child.
        by_module = {k[len("model.") :] if k.startswith("model.") else k: v for k, v in analysis.by_module().items()}
        total = analysis.total()
    gflops = {"total": total / 1e9}
    for part, prefixes in part_modules(model).items():
        gflops[part] = sum(by_module.get(q, 0) for q in prefixes) / 1e9
    # The meta-architecture calls the neck's forward_features directly (not as a module), so its
    # resizing is counted at the model's top level: the neck is everything outside the other parts.
    gflops["neck"] = gflops["total"] - sum(v for k, v in gflops.items() if k not in ("total", "neck"))
    return gflops


def main(argv=None) -> dict:
    args = get_parser().parse_args(argv)
    setup_logger(name="evad_d2")
    cfg = get_evad_cfg(args.config_file, list(args.opts) + ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg).eval()
    clip_size = args.input_size or (cfg.INPUT.NUM_FRAMES, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST)
    result = {"config": args.config_file, "input_size": list(clip_size)}

    if "parameter" in args.tasks:
        result["parameters"] = count_parameters(model)
        print(parameter_count_table(model, max_depth=2))
        print(tabulate(sorted(result["parameters"].items()), headers=["part", "parameters"], intfmt=","))

    if "flop" in args.tasks:
        base = list(cfg.MODEL.EVAD.KEEP_RATES)
        result["keep_rates"] = base
        result["gflops"] = count_gflops(model, clip_size)
        rows = [["config", result["gflops"]["total"]] + [result["gflops"][k] for k in part_modules(model)]]
        if args.keep_rates:
            result["gflops_by_keep_rate"] = {}
            for rho in args.keep_rates:
                model.set_keep_rates(scaled_keep_rates(base, rho))
                g = count_gflops(model, clip_size)
                result["gflops_by_keep_rate"][str(rho)] = g
                rows.append([f"rho={rho}", g["total"]] + [g[k] for k in part_modules(model)])
            model.set_keep_rates(base)
        headers = ["setting", "total"] + list(part_modules(model))
        print(tabulate(rows, headers=headers, floatfmt=".4g"))
        paper = {
            rho: ref
            for rho, ref in PAPER_GFLOPS_VIT_B_224.items()
            if str(rho) in result.get("gflops_by_keep_rate", {})
        }
        if paper and tuple(clip_size) == (16, 224, 224) and cfg.MODEL.EVAD.EMBED_DIM == 768:
            cmp_rows = []
            for rho, ref in sorted(paper.items(), reverse=True):
                ours = result["gflops_by_keep_rate"][str(rho)]["total"]
                cmp_rows.append([rho, ours, ref, ours / ref])
            result["paper_comparison"] = [dict(zip(["keep_rate", "ours", "paper", "ratio"], r)) for r in cmp_rows]
            print(tabulate(cmp_rows, headers=["keep rate", "GFLOPs (ours)", "GFLOPs (paper)", "ours/paper"], floatfmt=".3f"))

    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
