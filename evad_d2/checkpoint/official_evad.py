"""Official EVAD release checkpoints (MCG-NJU/EVAD, a PySlowFast fork) <-> this project's model.

The official ``.pth`` is PySlowFast's ``{"epoch", "model_state", "optimizer_state", "cfg", ...}``
with ``cfg`` the training config as YAML text. Its state-dict layout (one flat module):

==============================================  =============================================
official                                        evad_d2
==============================================  =============================================
``patch_embed.*``, ``blocks.{i}.*``, ``norm.*``  ``backbone.net.`` + same
(``pos_embed`` when learned)                    ``backbone.net.pos_embed``
``fpn_lateral{2..5}.*``, ``fpn_output{2..5}.*``  ``backbone.`` + same
``init_proposal_{features,boxes}.weight``       ``localization_head.`` + same
``det_head.s0_headseries.{i}.*``                ``localization_head.stages.{i}.*``
``det_head.encoder_to_decoder.weight``          ``action_head.encoder_to_decoder.weight``
``det_head.mask_token`` (1, 1, D)               ``action_head.mask_token`` (D,)
``det_head.decoder.blocks.{i}.act_module.*``,   ``action_head.classifiers.{i}.*``
``det_head.decoder.blocks.{i}.action_logits.*``
``det_head.decoder.blocks.{i}.*`` (the rest)    ``action_head.blocks.{i}.*``
``criterion.empty_weight`` (buffer)             not a weight: (1, no-object weight) of the loss
==============================================  =============================================

Position tables of the encoder and the decoder are fixed sin-cos tables (plain tensors, not in the
state dict). Any other key is an error: a converted checkpoint must compute what the official one
computes, so nothing may be dropped silently.
"""

import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
import yaml
from torch import Tensor

from ..modeling.backbone import PruningVideoViT
from ..modeling.heads import ContextRefinementHead
from .common import CheckpointFormatError, ConversionReport, find_submodule, strip_prefix

__all__ = [
    "is_official_evad_state_dict",
    "official_to_evad_d2",
    "evad_d2_to_official",
    "official_cfg_text",
    "official_config_overrides",
    "official_settings_warnings",
    "roi_extension_note",
    "OFFICIAL_DEFAULT_ROI_EXTENSION",
    "REQUIRED_OVERRIDES",
    "OFFICIAL_KEY_TABLE",
    "UNSUPPORTED_OFFICIAL_SETTINGS",
]

_Rule = Tuple["re.Pattern[str]", str, Optional[Callable[[Tensor], Tensor]], str]


def _rule(pattern: str, repl: str, fn: Optional[Callable[[Tensor], Tensor]] = None, why: str = "") -> _Rule:
    return re.compile(pattern), repl, fn, why


_VIT = (
    r"patch_embed\.proj\.(?:weight|bias)"
    r"|blocks\.\d+\.(?:norm[12]|attn\.(?:qkv|proj)|mlp\.fc[12])\.(?:weight|bias)"
    r"|blocks\.\d+\.attn\.[qv]_bias|norm\.(?:weight|bias)|pos_embed"
)
_DEC_BLOCK = r"(?:norm[12]|attn\.(?:qkv|proj)|mlp\.fc[12])\.(?:weight|bias)|attn\.[qv]_bias"
# evad_d2's action classifier has one hidden layer (official NUM_ACT = 1): act_module.0 and .1 only.
_CLASSIFIER = r"act_module\.[01]\.(?:weight|bias)|action_logits\.(?:weight|bias)"
_STAGE = (
    r"self_attn\.(?:in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)"
    r"|inst_interact\.(?:dynamic_layer|norm[123]|out_layer)\.(?:weight|bias)"
    r"|(?:linear[12]|norm[123]|class_logits|bboxes_delta)\.(?:weight|bias)"
    r"|(?:cls|reg)_module\.\d+\.(?:weight|bias)"
)

_MASK_WHY = "official mask token (1, 1, D) is stored as (D,)"

# official -> evad_d2. Patterns are anchored and name every parameter the official modules have,
# so a key of an unsupported variant (e.g. a learned decoder position table) stays unmapped.
_TO_OURS: List[_Rule] = [
    _rule(rf"^({_VIT})$", r"backbone.net.\1"),
    _rule(r"^(fpn_(?:lateral|output)[2-5]\.(?:weight|bias))$", r"backbone.\1"),
    _rule(r"^(init_proposal_(?:features|boxes)\.weight)$", r"localization_head.\1"),
    _rule(rf"^det_head\.s0_headseries\.(\d+)\.({_STAGE})$", r"localization_head.stages.\1.\2"),
    _rule(r"^det_head\.encoder_to_decoder\.weight$", "action_head.encoder_to_decoder.weight"),
    _rule(r"^det_head\.mask_token$", "action_head.mask_token", lambda t: t.reshape(-1), _MASK_WHY),
    _rule(rf"^det_head\.decoder\.blocks\.(\d+)\.({_CLASSIFIER})$", r"action_head.classifiers.\1.\2"),
    _rule(rf"^det_head\.decoder\.blocks\.(\d+)\.({_DEC_BLOCK})$", r"action_head.blocks.\1.\2"),
]

# evad_d2 -> official, the inverse of the above.
_TO_OFFICIAL: List[_Rule] = [
    _rule(rf"^backbone\.net\.({_VIT})$", r"\1"),
    _rule(r"^backbone\.(fpn_(?:lateral|output)[2-5]\.(?:weight|bias))$", r"\1"),
    _rule(r"^localization_head\.(init_proposal_(?:features|boxes)\.weight)$", r"\1"),
    _rule(rf"^localization_head\.stages\.(\d+)\.({_STAGE})$", r"det_head.s0_headseries.\1.\2"),
    _rule(r"^action_head\.encoder_to_decoder\.weight$", "det_head.encoder_to_decoder.weight"),
    _rule(r"^action_head\.mask_token$", "det_head.mask_token", lambda t: t.reshape(1, 1, -1), _MASK_WHY),
    _rule(rf"^action_head\.classifiers\.(\d+)\.({_CLASSIFIER})$", r"det_head.decoder.blocks.\1.\2"),
    _rule(rf"^action_head\.blocks\.(\d+)\.({_DEC_BLOCK})$", r"det_head.decoder.blocks.\1.\2"),
]

_EMPTY_WEIGHT = "criterion.empty_weight"
_EMPTY_WEIGHT_WHY = "loss buffer (1, no-object weight), rebuilt from MODEL.EVAD.LOSS.NO_OBJECT_WEIGHT"

# The switch without which a converted model does not compute what the official one computes: the
# official token order, keep-all-if-none, >= threshold, [0, w-1] box clipping with empty boxes kept,
# OpenCV's uint8 test resize (see evad_d2.modeling.meta_arch.evad.OFFICIAL_MODE).
REQUIRED_OVERRIDES: List[Tuple[str, Any]] = [("MODEL.EVAD.OFFICIAL_MODE", True)]

# MODEL.CRD.ROI_EXTENSION where an official config does not set it (the official
# projects/evad/models/config.py): the released keep-rate-1.0 config (ViT_B_16x4.yaml) relies on it;
# the pruned ones (ViT_B_16x4_KTP*.yaml, ViT_L_16x4_KTP*.yaml) set (0.4, 0.2).
OFFICIAL_DEFAULT_ROI_EXTENSION = (0.0, 0.0)


def is_official_evad_state_dict(state_dict: Mapping[str, Tensor]) -> bool:
    """True for the official layout: ``det_head.*`` next to top-level ``init_proposal_boxes``."""
    sd = strip_prefix(state_dict, "module.")
    return "init_proposal_boxes.weight" in sd and any(k.startswith("det_head.") for k in sd)


def _apply(
    state_dict: Mapping[str, Tensor], rules: List[_Rule], report: ConversionReport
) -> Tuple[Dict[str, Tensor], List[str]]:
    out: Dict[str, Tensor] = {}
    unmapped: List[str] = []
    for key, value in state_dict.items():
        for pattern, repl, fn, why in rules:
            if pattern.match(key):
                new_key = pattern.sub(repl, key)
                new_value = fn(value) if fn is not None else value
                if fn is not None:
                    report.transformed.append((new_key, tuple(value.shape), tuple(new_value.shape), why))
                if new_key in out:
                    raise CheckpointFormatError(f"two checkpoint keys map to {new_key} (second: {key})")
                out[new_key] = new_value
                report.mapped.append((key, new_key))
                break
        else:
            unmapped.append(key)
    return out, unmapped


def official_to_evad_d2(
    state_dict: Mapping[str, Tensor], source: str = "official EVAD checkpoint"
) -> Tuple[Dict[str, Tensor], ConversionReport]:
    """Convert an official EVAD state dict to this project's names and shapes.

    Raises:
        CheckpointFormatError: listing every key that has no counterpart here.
    """
    sd = strip_prefix(state_dict, "module.")
    report = ConversionReport(f"official EVAD checkpoint {source}")
    for key in [k for k in sd if k == _EMPTY_WEIGHT]:
        weight = sd.pop(key)
        report.ignored[key] = _EMPTY_WEIGHT_WHY
        if weight.numel() == 2 and not weight.is_meta:
            report.notes.append(f"official no-object loss weight: {weight[-1].item():g}")
    out, unmapped = _apply(sd, _TO_OURS, report)
    if unmapped:
        raise CheckpointFormatError(
            f"{source}: {len(unmapped)} official keys have no counterpart in evad_d2 (an unsupported variant "
            f"of the official model?): {unmapped[:20]}{' ...' if len(unmapped) > 20 else ''}"
        )
    return out, report


def evad_d2_to_official(state_dict: Mapping[str, Tensor], no_object_weight: Optional[float] = 0.1) -> Dict[str, Tensor]:
    """The inverse of :func:`official_to_evad_d2` (for checks and for exporting).

    Args:
        state_dict: this project's EVAD state dict (decoder action head).
        no_object_weight: value for the official ``criterion.empty_weight`` buffer; None omits it.

    Raises:
        CheckpointFormatError: for keys the official model has no place for.
    """
    report = ConversionReport("evad_d2 checkpoint")
    out, unmapped = _apply(state_dict, _TO_OFFICIAL, report)
    if unmapped:
        raise CheckpointFormatError(
            f"{len(unmapped)} keys have no counterpart in the official EVAD model: {unmapped[:20]}"
        )
    if no_object_weight is not None:
        out[_EMPTY_WEIGHT] = torch.tensor([1.0, float(no_object_weight)])
    return out


def _get(cfg: Mapping[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _as_tuple(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("("):
        value = yaml.safe_load("[" + value.strip("()") + "]")
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _load_official_cfg(cfg_text: str) -> Mapping[str, Any]:
    try:
        cfg = yaml.safe_load(cfg_text)
    except yaml.YAMLError as e:
        raise CheckpointFormatError(f"the official checkpoint's cfg is not readable YAML: {e}") from e
    if not isinstance(cfg, Mapping):
        raise CheckpointFormatError("the official checkpoint's cfg is not a YAML mapping")
    return cfg


def _roi_extension(cfg: Mapping[str, Any]) -> List[float]:
    value = _get(cfg, "MODEL.CRD.ROI_EXTENSION")
    return [float(r) for r in _as_tuple(OFFICIAL_DEFAULT_ROI_EXTENSION if value is None else value)]


def roi_extension_note(cfg_text: Optional[str]) -> str:
    """One line: the RoI extension (``MODEL.EVAD.DECODER.ROI_EXTEND``) a converted official
    checkpoint needs and where it comes from (``cfg_text``: the checkpoint's stored config, None
    when the file has none)."""
    if cfg_text is None:
        return (
            "RoI extension unknown (the file has no training config): set MODEL.EVAD.DECODER.ROI_EXTEND "
            "[0.0,0.0] for a keep-rate-1.0 checkpoint (official ViT_B_16x4.yaml) or [0.4,0.2] for a pruned one "
            "(official *_KTP*.yaml)"
        )
    cfg = _load_official_cfg(cfg_text)
    ext = _roi_extension(cfg)
    source = (
        "the file's MODEL.CRD.ROI_EXTENSION"
        if _get(cfg, "MODEL.CRD.ROI_EXTENSION") is not None
        else "the official default; the file's config does not set MODEL.CRD.ROI_EXTENSION"
    )
    rates = _get(cfg, "MODEL.KTP.KEEP_RATES")
    if rates is None:
        kind = "keep rates not in the file's config (official default: all 1.0)"
    elif all(float(r) == 1.0 for r in rates):
        kind = "keep rates all 1.0, as the released ViT_B_16x4.yaml (extension (0, 0))"
    else:
        kind = "pruned keep rates, as the released *_KTP*.yaml (extension (0.4, 0.2))"
    return f"RoI extension MODEL.EVAD.DECODER.ROI_EXTEND {ext} from {source} ({kind})"


# (official config key, evad_d2 key, conversion), in the order official_config_overrides applies them.
OFFICIAL_KEY_TABLE: Tuple[Tuple[str, str, Callable[[Any], Any]], ...] = (
    ("ViT.EMBED_DIM", "MODEL.EVAD.EMBED_DIM", int),
    ("ViT.DEPTH", "MODEL.EVAD.DEPTH", int),
    ("ViT.NUM_HEADS", "MODEL.EVAD.NUM_HEADS", int),
    ("ViT.MLP_RATIO", "MODEL.EVAD.MLP_RATIO", float),
    ("ViT.QKV_BIAS", "MODEL.EVAD.QKV_BIAS", bool),
    ("ViT.PATCH_SIZE", "MODEL.EVAD.PATCH_SIZE", int),
    ("ViT.TUBELET_SIZE", "MODEL.EVAD.TUBELET_SIZE", int),
    ("ViT.PRETRAIN_IMG_SIZE", "MODEL.EVAD.PRETRAIN_IMG_SIZE", int),
    ("ViT.USE_LEARNABLE_POS_EMB", "MODEL.EVAD.LEARNABLE_POS_EMBED", bool),
    ("ViT.DROP_PATH_RATE", "MODEL.EVAD.DROP_PATH_RATE", float),
    ("ViT.FPN_INDICES", "MODEL.EVAD.FEATURE_LAYERS", lambda v: [int(i) for i in v]),
    ("MODEL.KTP.KEEP_RATES", "MODEL.EVAD.KEEP_RATES", lambda v: [float(r) for r in v]),
    ("MODEL.KTP.ENHANCED_WEIGHT", "MODEL.EVAD.KEYFRAME_WEIGHT", float),
    ("MODEL.NUM_CLASSES", "MODEL.EVAD.NUM_ACTION_CLASSES", int),
    ("MODEL.SparseRCNN.NUM_PROPOSALS", "MODEL.EVAD.LOC.NUM_PROPOSALS", int),
    ("MODEL.SparseRCNN.HIDDEN_DIM", "MODEL.EVAD.LOC.HIDDEN_DIM", int),
    ("MODEL.SparseRCNN.NUM_HEADS", "MODEL.EVAD.LOC.NUM_STAGES", int),
    ("MODEL.SparseRCNN.NHEADS", "MODEL.EVAD.LOC.NUM_HEADS", int),
    ("MODEL.SparseRCNN.DIM_FEEDFORWARD", "MODEL.EVAD.LOC.DIM_FEEDFORWARD", int),
    ("MODEL.SparseRCNN.DIM_DYNAMIC", "MODEL.EVAD.LOC.DIM_DYNAMIC", int),
    ("MODEL.SparseRCNN.NUM_DYNAMIC", "MODEL.EVAD.LOC.NUM_DYNAMIC", int),
    ("MODEL.SparseRCNN.PERSON_THRESHOLD", "MODEL.EVAD.LOC.SCORE_THRESH_TEST", float),
    ("MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", "MODEL.EVAD.LOC.POOLER_RESOLUTION", int),
    ("MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", "MODEL.EVAD.LOC.POOLER_SAMPLING_RATIO", int),
    ("MODEL.CRD.EMBED_DIM", "MODEL.EVAD.DECODER.DIM", int),
    ("MODEL.CRD.DEPTH", "MODEL.EVAD.DECODER.DEPTH", int),
    ("MODEL.CRD.NUM_HEADS", "MODEL.EVAD.DECODER.NUM_HEADS", int),
    ("MODEL.CRD.MLP_RATIO", "MODEL.EVAD.DECODER.MLP_RATIO", float),
    ("MODEL.CRD.DROP_PATH_RATE", "MODEL.EVAD.DECODER.DROP_PATH_RATE", float),
    ("MODEL.SparseRCNN.ACT_FC_DIM", "MODEL.EVAD.DECODER.CLS_HIDDEN_DIM", int),
    ("DETECTION.ROI_XFORM_RESOLUTION", "MODEL.EVAD.DECODER.POOLER_RESOLUTION", int),
    ("MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", "MODEL.EVAD.DECODER.POOLER_SAMPLING_RATIO", int),
    ("DATA.NUM_FRAMES", "INPUT.NUM_FRAMES", int),
    ("DATA.SAMPLING_RATE", "INPUT.SAMPLING_RATE", int),
    ("AVA.MIN_SIZE_TEST", "INPUT.MIN_SIZE_TEST", int),
    ("AVA.MAX_SIZE_TEST", "INPUT.MAX_SIZE_TEST", int),
    ("DATA.MEAN", "MODEL.PIXEL_MEAN", lambda v: [round(float(m) * 255.0, 6) for m in v]),
    ("DATA.STD", "MODEL.PIXEL_STD", lambda v: [round(float(s) * 255.0, 6) for s in v]),
)

# Official settings evad_d2 has only one value of: (key, the supported value).
UNSUPPORTED_OFFICIAL_SETTINGS: Tuple[Tuple[str, Any], ...] = (
    ("MODEL.SparseRCNN.NUM_CLS", 1),
    ("MODEL.SparseRCNN.NUM_REG", 3),
    ("MODEL.SparseRCNN.NUM_ACT", 1),
    ("MODEL.SparseRCNN.JITTER_BOX", False),
    ("MODEL.SparseRCNN.SOFTMAX_POSE", False),
    ("MODEL.SparseRCNN.USE_FOCAL", False),
    ("MODEL.SparseRCNN.NUM_EVAL_ACT_CLASSES", 0),
    ("MODEL.CRD.USE_LEARNABLE_POS_EMB", False),
    ("ViT.INIT_VALUES", 0.0),
)


def official_config_overrides(cfg_text: str) -> Tuple[List[Tuple[str, Any]], List[str]]:
    """evad_d2 config overrides equivalent to an official checkpoint's stored training config.

    The RoI extension is always among them: where the config does not name it, the official
    default :data:`OFFICIAL_DEFAULT_ROI_EXTENSION` (what the official code then uses).

    Args:
        cfg_text: the ``cfg`` entry of the official checkpoint (PySlowFast YAML dump).

    Returns:
        (overrides as (KEY, value) pairs, in the order to apply them, including
        :data:`REQUIRED_OVERRIDES`; warnings about official settings that have no equivalent).
    """
    cfg = _load_official_cfg(cfg_text)

    overrides: List[Tuple[str, Any]] = []
    for official, ours, conv in OFFICIAL_KEY_TABLE:
        value = _get(cfg, official)
        if value is not None:
            overrides.append((ours, conv(value)))
    overrides.append(("MODEL.EVAD.DECODER.ROI_EXTEND", _roi_extension(cfg)))
    overrides.extend(REQUIRED_OVERRIDES)

    warnings = []
    for key, supported in UNSUPPORTED_OFFICIAL_SETTINGS:
        value = _get(cfg, key)
        if value is not None and value != supported:
            warnings.append(
                f"official {key} = {value!r} has no evad_d2 equivalent (only {supported!r}); outputs will differ"
            )
    return overrides, warnings


def official_cfg_text(loaded: Mapping[str, Any]) -> Optional[str]:
    """The training config (YAML text) an official checkpoint stores under ``cfg``, or None."""
    for container in (loaded, loaded.get("model")):
        if isinstance(container, Mapping) and isinstance(container.get("cfg"), str):
            return container["cfg"]
    return None


def _format_overrides(overrides) -> str:
    return " ".join(f"{k} {v!r}" for k, v in overrides)


def official_settings_warnings(model: torch.nn.Module, overrides: List[Tuple[str, Any]]) -> List[str]:
    """Warnings where ``model``'s inference settings differ from an official checkpoint's ``overrides``
    (from :func:`official_config_overrides`), with the overrides that reproduce official outputs."""
    actual: Dict[str, Any] = {}
    _, vit = find_submodule(model, PruningVideoViT)
    if vit is not None:
        actual["MODEL.EVAD.KEEP_RATES"] = list(vit.keep_rates)
        actual["MODEL.EVAD.KEYFRAME_WEIGHT"] = vit.keyframe_weight
    _, head = find_submodule(model, ContextRefinementHead)
    if head is not None:
        actual["MODEL.EVAD.DECODER.ROI_EXTEND"] = list(head.pooler.roi_extend)
    # The official token order and keep-all-if-none come with MODEL.EVAD.OFFICIAL_MODE below.
    if hasattr(model, "score_thresh"):
        actual["MODEL.EVAD.LOC.SCORE_THRESH_TEST"] = model.score_thresh
    if hasattr(model, "official_mode"):
        actual["MODEL.EVAD.OFFICIAL_MODE"] = model.official_mode
    wanted = dict(overrides)
    differ = [
        (k, wanted[k])
        for k in actual
        if k in wanted and (list(wanted[k]) if isinstance(wanted[k], (list, tuple)) else wanted[k]) != actual[k]
    ]
    if not differ:
        return []
    return [
        "the model's settings differ from the official checkpoint's ("
        + ", ".join(f"{k}: model {actual[k]!r}, official {v!r}" for k, v in differ)
        + "); to reproduce official outputs set "
        + _format_overrides(differ)
    ]
