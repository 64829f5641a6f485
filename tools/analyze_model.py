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

from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger
from fvcore.nn import parameter_count_table
from tabulate import tabulate

from evad_d2 import get_evad_cfg
from evad_d2.benchmark.analysis import count_gflops, count_parameters, paper_comparison, part_modules
from evad_d2.benchmark.report import write_json
from evad_d2.modeling.backbone import scaled_keep_rates


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--tasks", nargs="+", choices=["parameter", "flop"], default=["parameter"])
    p.add_argument("--input-size", type=int, nargs=3, default=None, metavar=("T", "H", "W"))
    p.add_argument("--keep-rates", type=float, nargs="*", default=None, help="FLOPs at these keep rates too")
    p.add_argument("--json", default=None)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return p


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
        comparison = paper_comparison(result.get("gflops_by_keep_rate", {}), clip_size, cfg.MODEL.EVAD.EMBED_DIM)
        if comparison:
            result["paper_comparison"] = comparison
            cmp_rows = [[r["keep_rate"], r["ours"], r["paper"], r["ratio"]] for r in comparison]
            print(tabulate(cmp_rows, headers=["keep rate", "GFLOPs (ours)", "GFLOPs (paper)", "ours/paper"], floatfmt=".3f"))

    if args.json:
        write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
