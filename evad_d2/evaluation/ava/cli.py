"""Command line of the AVA evaluation: ``python -m evad_d2.evaluation.ava --help``."""
import argparse
import json
import logging
import math
import sys
from typing import Dict, Optional, Sequence

from evad_d2.data.formats.ava import AvaFormatError
from evad_d2.utils.atomic_io import atomic_write

from .protocol import DEFAULT_PROTOCOL, PROTOCOL_TABLE, PROTOCOLS, FrameMapResult, evaluate_ava_files, result_to_json

__all__ = ["main", "format_table"]


def format_table(result: FrameMapResult, names: Dict[int, str]) -> str:
    lines = [f"{'id':>4}  {'AP (%)':>8}  {'#gt':>7}  {'#det':>9}  name"]
    for c, ap in result.per_class_ap.items():
        shown = "     n/a" if math.isnan(ap) else f"{100 * ap:8.2f}"
        lines.append(f"{c:>4}  {shown}  {result.num_groundtruth[c]:>7}  {result.num_detections[c]:>9}  {names.get(c, '')}")
    lines.append(f"frame-mAP@0.5IOU: {100 * result.mean_ap:.4f}")
    lines.extend(f"warning: {w}" for w in result.warnings)
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evad_d2.evaluation.ava",
        description="AVA frame-mAP@0.5 by the official protocol (per-class AP and mAP, in percent).",
        epilog="How the protocols differ (--protocol):\n\n" + PROTOCOL_TABLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-g", "--groundtruth", required=True, help="ground-truth CSV (e.g. ava_val_v2.2.csv)")
    parser.add_argument("-d", "--detections", required=True, help="detection CSV (video,ts,x1,y1,x2,y2,action,score)")
    parser.add_argument(
        "-l", "--labelmap", required=True,
        help="label map pbtxt of the evaluated classes (AVA v2.2: ava_action_list_v2.2_for_activitynet_2019.pbtxt)",
    )
    parser.add_argument("-e", "--exclusions", default=None, help="excluded timestamps CSV")
    parser.add_argument("--json", default=None, help="write {'mAP': x, 'per_class': {...}, 'warnings': [...]} here (percent)")
    parser.add_argument("--plot", default=None, help="write a per-class AP bar chart (PNG) here")
    parser.add_argument(
        "--protocol", choices=PROTOCOLS, default=DEFAULT_PROTOCOL,
        help="pyslowfast: PySlowFast's ava_eval_helper.py (EVAD's numbers); activitynet: ActivityNet's "
        "get_ava_performance.py (see the table below)",
    )
    parser.add_argument("--strict-classes", action="store_true", help="a detection class id outside the label map is an error")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result, names = evaluate_ava_files(
            args.groundtruth, args.detections, args.labelmap, args.exclusions,
            protocol=args.protocol, strict_classes=args.strict_classes,
        )
    except AvaFormatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(result, names))
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump(result_to_json(result), f, indent=2)
    if args.plot:
        from ..plots import plot_per_class_ap

        plot_per_class_ap(
            {names.get(c, str(c)): 100 * ap for c, ap in result.per_class_ap.items() if not math.isnan(ap)},
            args.plot, title=f"AVA frame-mAP@0.5 = {100 * result.mean_ap:.2f}",
        )
    return 0
