"""AdamW with layer-wise lr decay and a backbone lr multiplier (paper appendix B)."""
import logging
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.config import CfgNode
from detectron2.solver.build import maybe_add_gradient_clipping
from torch import nn

from ..config_check import check_optimizer_cfg

__all__ = ["build_param_groups", "build_optimizer", "make_optimizer"]

logger = logging.getLogger(__name__)

# Parameters that are tables or offsets rather than weights: no weight decay.
_NO_DECAY_NAMES = ("pos_embed", "mask_token", "q_bias", "v_bias")


def build_param_groups(
    model: nn.Module, base_lr: float, weight_decay: float, layer_decay: float = 1.0, backbone_multiplier: float = 1.0
) -> List[Dict]:
    """One group per distinct (lr, weight decay); biases, norms and tables get no decay.

    With ``layer_decay`` < 1, a parameter of the backbone's encoder with layer id ``k`` (asked from
    the backbone: ``model.backbone.layer_id(name)``, see the backbone contract) gets
    ``base_lr * backbone_multiplier * layer_decay ** (L + 1 - k)``, L = ``model.backbone.num_layers``:
    ViT block i ``layer_decay ** (L - i)``, the patch embedding one power more. Parameters the
    backbone gives no layer id (the neck) and those outside the backbone get ``base_lr``.
    """
    backbone = getattr(model, "backbone", None)
    layer_id = getattr(backbone, "layer_id", None)
    num_layers = backbone.num_layers if layer_id is not None else 0
    groups: Dict[Tuple[float, float], List[nn.Parameter]] = {}
    seen = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        lr = base_lr
        k = layer_id(name[len("backbone.") :]) if layer_id is not None and name.startswith("backbone.") else None
        if k is not None:
            lr *= backbone_multiplier * layer_decay ** (num_layers + 1 - k)
        no_decay = p.ndim <= 1 or name.split(".")[-1] in _NO_DECAY_NAMES
        groups.setdefault((lr, 0.0 if no_decay else weight_decay), []).append(p)
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in sorted(groups.items(), key=lambda kv: kv[0])]


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer of ``cfg.SOLVER`` (AdamW by default), with gradient clipping if configured."""
    check_optimizer_cfg(cfg)  # also for configs that did not come through get_evad_cfg
    s = cfg.SOLVER
    groups = build_param_groups(model, s.BASE_LR, s.WEIGHT_DECAY, s.LAYER_DECAY, s.BACKBONE_MULTIPLIER)
    clip = s.CLIP_GRADIENTS
    return make_optimizer(
        groups, name=s.OPTIMIZER, lr=s.BASE_LR, momentum=s.MOMENTUM, nesterov=s.NESTEROV,
        clip_type=clip.CLIP_TYPE if clip.ENABLED else None, clip_value=clip.CLIP_VALUE, norm_type=clip.NORM_TYPE,
    )


def make_optimizer(
    params: List[Dict],
    *,
    name: str,
    lr: float,
    momentum: float,
    nesterov: bool,
    clip_type: Optional[str],
    clip_value: float,
    norm_type: float,
) -> torch.optim.Optimizer:
    """The optimizer of SOLVER's keys given as arguments (what :func:`build_optimizer` and the
    LazyConfig files build): "ADAMW" (betas 0.9, 0.999) or "SGD" (``momentum``, ``nesterov``) on
    ``params`` (:func:`build_param_groups`), clipping gradients when ``clip_type`` is one of
    detectron2's "value" / "norm" (per parameter) or "full_model" (the norm of all gradients
    together); None: no clipping.
    """
    key = name.upper()
    if key == "ADAMW":
        cls, kwargs = torch.optim.AdamW, {"betas": (0.9, 0.999)}
    elif key == "SGD":
        cls, kwargs = torch.optim.SGD, {"momentum": momentum, "nesterov": nesterov}
    else:
        raise ValueError(f"optimizer name {name!r} is not one of 'ADAMW', 'SGD' (SOLVER.OPTIMIZER)")
    if clip_type == "full_model":
        cls = _with_full_model_clipping(cls, clip_value, norm_type)
    elif clip_type is not None:
        clip = {"ENABLED": True, "CLIP_TYPE": clip_type, "CLIP_VALUE": clip_value, "NORM_TYPE": norm_type}
        cls = maybe_add_gradient_clipping(CfgNode({"SOLVER": {"CLIP_GRADIENTS": clip}}), cls)
    logger.info("%s with %d parameter groups (lr %.3g..%.3g)", key, len(params), min(g["lr"] for g in params), max(g["lr"] for g in params))
    return cls(params, lr=lr, **kwargs)


def _with_full_model_clipping(optim_cls, max_norm: float, norm_type: float):
    """``optim_cls`` whose step first clips the norm of all gradients together (as DETR-style
    detectors train; detectron2's own clipping is per parameter)."""

    class FullModelClipping(optim_cls):
        def step(self, closure=None):
            params = [p for g in self.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
            return super().step(closure)

    FullModelClipping.__name__ = optim_cls.__name__ + "WithFullModelGradientClip"
    return FullModelClipping
