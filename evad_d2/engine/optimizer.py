"""AdamW with layer-wise lr decay and a backbone lr multiplier (paper appendix B)."""
import logging
from typing import Dict, List, Tuple

import torch
from detectron2.solver.build import maybe_add_gradient_clipping
from torch import nn

from ..config_check import check_optimizer_cfg

__all__ = ["vit_layer_id", "build_param_groups", "build_optimizer"]

logger = logging.getLogger(__name__)

# Parameters that are tables or offsets rather than weights: no weight decay.
_NO_DECAY_NAMES = ("pos_embed", "mask_token", "q_bias", "v_bias")


def vit_layer_id(name: str, num_layers: int) -> int:
    """Depth of a parameter for layer-wise decay: 0 embeddings, i+1 block i, num_layers+1 the rest.

    Names are relative to the model (``backbone.net.blocks.3.attn.qkv.weight``).
    """
    if name.startswith("backbone.net."):
        rest = name[len("backbone.net.") :]
        if rest.startswith(("patch_embed", "pos_embed")):
            return 0
        if rest.startswith("blocks."):
            return int(rest.split(".")[1]) + 1
    return num_layers + 1


def build_param_groups(
    model: nn.Module, base_lr: float, weight_decay: float, layer_decay: float = 1.0, backbone_multiplier: float = 1.0
) -> List[Dict]:
    """One group per distinct (lr, weight decay); biases, norms and tables get no decay.

    With ``layer_decay`` < 1, ViT block i gets ``base_lr * layer_decay ** (L + 1 - (i + 1))`` (the
    patch embedding one power more); every backbone parameter also gets ``backbone_multiplier``.
    """
    num_layers = len(model.backbone.net.blocks) if hasattr(model, "backbone") and hasattr(model.backbone, "net") else 0
    groups: Dict[Tuple[float, float], List[nn.Parameter]] = {}
    seen = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        lr = base_lr
        if name.startswith("backbone.net."):
            lr *= backbone_multiplier * layer_decay ** (num_layers + 1 - vit_layer_id(name, num_layers))
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
