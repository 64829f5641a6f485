#!/usr/bin/env python
"""Convert an official EVAD release checkpoint (MCG-NJU/EVAD, PySlowFast layout) to evad_d2.

Example:
    python tools/convert_official_evad.py EVAD_ViT_B_KTP.pth output/evad_vitb_rho0.7_official.pth \\
        --config-file configs/AVA/v2.2/EVAD_ViT-B_K400_rho0.7_224.yaml

Every official tensor is mapped (or the conversion fails, naming the keys); the report lists what
was transformed (the mask token's shape) or left out (the loss's no-object weight buffer). The
model described by ``--config-file`` plus the settings stored in the official file is built on the
meta device (no memory, no weights) and checked to receive a same-shaped value for every tensor.
The last lines print the config overrides that make this project compute what the official model
computes: keep rates, w_kf, test size, the RoI extension (the released keep-rate-1.0 config uses
none, (0, 0); the pruned ones (0.4, 0.2); a line says which this checkpoint needs and why), and the
one switch ``MODEL.EVAD.OFFICIAL_MODE True`` (the official token order, keep-all-if-none, ``>=``
threshold, box clipping and OpenCV's uint8 test resize). The output file is written atomically.
"""

import argparse
import logging
import os
import sys
from typing import Any, Dict, List, Tuple

import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from evad_d2 import add_evad_config  # noqa: E402
from evad_d2.checkpoint import (  # noqa: E402
    REQUIRED_OVERRIDES,
    CheckpointFormatError,
    find_state_dict,
    is_official_evad_state_dict,
    load_checkpoint_file,
    official_config_overrides,
    official_to_evad_d2,
)
from evad_d2.checkpoint.official_evad import roi_extension_note  # noqa: E402
from evad_d2.utils.atomic_io import atomic_write  # noqa: E402

logger = logging.getLogger("evad_d2.convert_official_evad")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="official EVAD .pth")
    p.add_argument("output", help="evad_d2 .pth to write")
    p.add_argument(
        "--config-file",
        default=os.path.join(REPO, "configs", "Base-EVAD.yaml"),
        help="evad_d2 config the converted weights are checked against "
        "(the official file's settings are merged on top)",
    )
    p.add_argument("--no-verify", action="store_true", help="skip building the model to check keys and shapes")
    p.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE", help="further config overrides for the check")
    return p


def _cfg_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _lookup(cfg, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return _cfg_value(node)


def make_cfg(config_file: str, overrides: List[Tuple[str, Any]], opts: List[str]):
    """(the config with the official settings merged, the overrides that changed a value of ``config_file``)."""
    cfg = get_cfg()
    add_evad_config(cfg)
    cfg.merge_from_file(config_file, allow_unsafe=False)  # no yaml.unsafe_load: a config file is data
    changed = [(k, v) for k, v in overrides if _lookup(cfg, k) != _cfg_value(v)]
    for key, value in overrides:
        cfg.merge_from_list([key, _cfg_value(value)])
    cfg.merge_from_list(opts)
    return cfg, changed


def verify(converted: Dict[str, torch.Tensor], cfg, config_file: str) -> int:
    """Check the converted tensors against a model built on the meta device; returns its parameter count."""
    cfg = cfg.clone()
    cfg.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        model = build_model(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(converted))
    extra = sorted(set(converted) - set(expected))
    wrong = [
        (k, tuple(converted[k].shape), s)
        for k, s in expected.items()
        if k in converted and tuple(converted[k].shape) != s
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} model tensors get no value: {missing[:12]}")
    if extra:
        problems.append(f"{len(extra)} converted tensors have no place in the model: {extra[:12]}")
    if wrong:
        problems.append("shape differences: " + "; ".join(f"{k}: converted {a} vs model {b}" for k, a, b in wrong[:12]))
    if problems:
        raise CheckpointFormatError(
            f"converted weights do not fit the model of {config_file}:\n  " + "\n  ".join(problems)
        )
    return sum(p.numel() for p in model.parameters())


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="evad_d2")
    loaded = load_checkpoint_file(args.input)
    sd, container = find_state_dict(loaded, args.input)
    if not is_official_evad_state_dict(sd):
        raise CheckpointFormatError(
            f"{args.input}: not an official EVAD checkpoint (no det_head.* next to init_proposal_boxes.weight); "
            "VideoMAE and evad_d2 checkpoints need no conversion: pass them as MODEL.WEIGHTS directly"
        )
    converted, report = official_to_evad_d2(sd, source=args.input)
    print(report.summary())

    cfg_text = loaded.get("cfg") if isinstance(loaded, dict) else None
    if not isinstance(cfg_text, str):
        cfg_text = None
    if cfg_text is not None:
        overrides, warnings = official_config_overrides(cfg_text)
        print(roi_extension_note(cfg_text))
    else:
        overrides = list(REQUIRED_OVERRIDES)
        warnings = [
            "no training config in the file: set the model's settings (keep rates, w_kf, sizes) by hand",
            roi_extension_note(None),
        ]
    for w in warnings:
        print(f"WARNING: {w}")

    cfg, changed = make_cfg(args.config_file, overrides, args.opts)
    if not args.no_verify:
        num_params = verify(converted, cfg, args.config_file)
        print(f"verified: all {len(converted)} tensors fit the model of {args.config_file} ({num_params:,} parameters)")

    out = {
        "model": converted,
        "__author__": f"evad_d2 tools/convert_official_evad.py from {os.path.basename(args.input)}",
        "official_config_overrides": [[k, _cfg_value(v)] for k, v in overrides],
    }
    if isinstance(loaded, dict) and "epoch" in loaded:
        out["official_epoch"] = loaded["epoch"]
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with atomic_write(args.output) as f:
        torch.save(out, f)
    print(f"wrote {args.output} ({len(converted)} tensors, from the '{container or 'raw'}' state dict)")
    # Only what differs from the config file, so the command stays readable.
    opts = " ".join(f"{k} {_format_opt(v)}" for k, v in changed)
    if any(k == "MODEL.EVAD.OFFICIAL_MODE" for k, _ in changed):
        print(
            "MODEL.EVAD.OFFICIAL_MODE True is needed to reproduce the official outputs (token order, keep-all-if-none, "
            ">= threshold, [0, w-1] box clipping, OpenCV uint8 test resize): keep it in the command below"
        )
    print(
        f"evaluate with: python train_net.py --config-file {args.config_file} --eval-only "
        f"MODEL.WEIGHTS {args.output} {opts}"
    )
    return 0


def _format_opt(value: Any) -> str:
    # detectron2 parses command-line values with literal_eval: lists and tuples without spaces.
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
