"""AdamW with layer-wise lr decay and a backbone lr multiplier (paper appendix B)."""
import logging
from typing import Dict, List, Tuple

import torch
from detectron2.solver.build import maybe_add_gradient_clipping
from torch import nn

from ..config_check import check_optimizer_cfg

__all__ = ["build_param_groups", "build_optimizer"]

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
    name = s.OPTIMIZER.upper()
    if name == "ADAMW":
        cls, kwargs = torch.optim.AdamW, {"betas": (0.9, 0.999)}
    else:  # "SGD"
        cls, kwargs = torch.optim.SGD, {"momentum": s.MOMENTUM, "nesterov": s.NESTEROV}
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE == "full_model":
        cls = _with_full_model_clipping(cls, clip.CLIP_VALUE, clip.NORM_TYPE)
    else:
        cls = maybe_add_gradient_clipping(cfg, cls)
    logger.info("%s with %d parameter groups (lr %.3g..%.3g)", name, len(groups), min(g["lr"] for g in groups), max(g["lr"] for g in groups))
    return cls(groups, lr=s.BASE_LR, **kwargs)


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
