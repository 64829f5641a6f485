"""Converting an official EVAD release checkpoint to an evad_d2 one, checked against a model
(what ``tools/convert_official_evad.py`` runs).

Every official tensor is mapped (or the conversion fails, naming the keys); the report lists what
was transformed (the mask token's shape) or left out (the loss's no-object weight buffer). The
model described by the config file plus the settings stored in the official file is built on the
meta device (no memory, no weights) and checked to receive a same-shaped value for every tensor.
The last lines printed are the config overrides that make this project compute what the official
model computes: keep rates, w_kf, test size, the RoI extension (the released keep-rate-1.0 config
uses none, (0, 0); the pruned ones (0.4, 0.2); a line says which this checkpoint needs and why),
and the one switch ``MODEL.EVAD.OFFICIAL_MODE True``. The output file is written atomically.
"""

import os
from typing import Any, Dict, List, Sequence, Tuple

import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from ..config import add_evad_config
from ..utils.atomic_io import atomic_write
from .common import CheckpointFormatError, find_state_dict, load_checkpoint_file
from .official_evad import (
    REQUIRED_OVERRIDES,
    is_official_evad_state_dict,
    official_config_overrides,
    official_to_evad_d2,
    roi_extension_note,
)

__all__ = ["convert_official_checkpoint", "official_converter_cfg", "verify_converted"]


def _cfg_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _lookup(cfg, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return _cfg_value(node)


def official_converter_cfg(config_file: str, overrides: List[Tuple[str, Any]], opts: Sequence[str]):
    """(``config_file`` with the official settings ``overrides`` and then ``opts`` merged, the
    overrides that changed a value of ``config_file``). The file is read with ``yaml.safe_load``."""
    cfg = get_cfg()
    add_evad_config(cfg)
    cfg.merge_from_file(config_file, allow_unsafe=False)  # no yaml.unsafe_load: a config file is data
    changed = [(k, v) for k, v in overrides if _lookup(cfg, k) != _cfg_value(v)]
    for key, value in overrides:
        cfg.merge_from_list([key, _cfg_value(value)])
    cfg.merge_from_list(list(opts))
    return cfg, changed


def verify_converted(converted: Dict[str, torch.Tensor], cfg, config_file: str) -> int:
    """Check converted tensors against the model of ``cfg`` built on the meta device.

    Returns:
        the model's parameter count.

    Raises:
        CheckpointFormatError: tensors missing, without a place in the model, or of another shape.
    """
    cfg = cfg.clone()
    cfg.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        model = build_model(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(converted))
    extra = sorted(set(converted) - set(expected))
    wrong = [(k, tuple(converted[k].shape), s) for k, s in expected.items() if k in converted and tuple(converted[k].shape) != s]
    problems = []
    if missing:
        problems.append(f"{len(missing)} model tensors get no value: {missing[:12]}")
    if extra:
        problems.append(f"{len(extra)} converted tensors have no place in the model: {extra[:12]}")
    if wrong:
        problems.append("shape differences: " + "; ".join(f"{k}: converted {a} vs model {b}" for k, a, b in wrong[:12]))
    if problems:
        raise CheckpointFormatError(f"converted weights do not fit the model of {config_file}:\n  " + "\n  ".join(problems))
    return sum(p.numel() for p in model.parameters())


def _format_opt(value: Any) -> str:
    # detectron2 parses command-line values with literal_eval: lists and tuples without spaces.
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def _official_overrides(loaded: Any) -> Tuple[List[Tuple[str, Any]], List[str], str]:
    """(overrides, warnings, RoI-extension note) from the file's stored training config, if any."""
    cfg_text = loaded.get("cfg") if isinstance(loaded, dict) else None
    if isinstance(cfg_text, str):
        overrides, warnings = official_config_overrides(cfg_text)
        return overrides, warnings, roi_extension_note(cfg_text)
    warnings = ["no training config in the file: set the model's settings (keep rates, w_kf, sizes) by hand",
                roi_extension_note(None)]
    return list(REQUIRED_OVERRIDES), warnings, ""


def convert_official_checkpoint(
    input_path: str, output_path: str, *, config_file: str, opts: Sequence[str] = (), verify: bool = True
) -> int:
    """Convert ``input_path`` (official EVAD ``.pth``) to ``output_path``, printing the report, the
    check's result and the evaluation command. Returns 0.

    Raises:
        CheckpointFormatError: not an official checkpoint, or weights that do not fit the model.
    """
    loaded = load_checkpoint_file(input_path)
    sd, container = find_state_dict(loaded, input_path)
    if not is_official_evad_state_dict(sd):
        raise CheckpointFormatError(
            f"{input_path}: not an official EVAD checkpoint (no det_head.* next to init_proposal_boxes.weight); "
            "VideoMAE and evad_d2 checkpoints need no conversion: pass them as MODEL.WEIGHTS directly"
        )
    converted, report = official_to_evad_d2(sd, source=input_path)
    print(report.summary())
    overrides, warnings, note = _official_overrides(loaded)
    if note:
        print(note)
    for w in warnings:
        print(f"WARNING: {w}")

    cfg, changed = official_converter_cfg(config_file, overrides, opts)
    if verify:
        num_params = verify_converted(converted, cfg, config_file)
        print(f"verified: all {len(converted)} tensors fit the model of {config_file} ({num_params:,} parameters)")

    out = {
        "model": converted,
        "__author__": f"evad_d2 tools/convert_official_evad.py from {os.path.basename(input_path)}",
        "official_config_overrides": [[k, _cfg_value(v)] for k, v in overrides],
    }
    if isinstance(loaded, dict) and "epoch" in loaded:
        out["official_epoch"] = loaded["epoch"]
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    with atomic_write(output_path) as f:
        torch.save(out, f)
    print(f"wrote {output_path} ({len(converted)} tensors, from the '{container or 'raw'}' state dict)")
    # Only what differs from the config file, so the command stays readable.
    command_opts = " ".join(f"{k} {_format_opt(v)}" for k, v in changed)
    if any(k == "MODEL.EVAD.OFFICIAL_MODE" for k, _ in changed):
        print(
            "MODEL.EVAD.OFFICIAL_MODE True is needed to reproduce the official outputs (token order, keep-all-if-none, "
            ">= threshold, [0, w-1] box clipping, OpenCV uint8 test resize): keep it in the command below"
        )
    print(f"evaluate with: python train_net.py --config-file {config_file} --eval-only MODEL.WEIGHTS {output_path} {command_opts}")
    return 0
