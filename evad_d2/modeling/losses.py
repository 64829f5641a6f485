"""Set-prediction and action losses of EVAD (appendix B, following WOO).

Person/no-object cross-entropy, L1 and GIoU box losses on Hungarian-matched proposals for every
localization stage (each stage matched on its own), and binary cross-entropy on the actions of the
proposals matched at the last stage, for every decoder layer.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.utils import comm
from torch import Tensor, nn
from torchvision.ops import generalized_box_iou_loss

from .matcher import HungarianMatcher, image_size_whwh

__all__ = ["SetCriterion"]

Indices = List[Tuple[Tensor, Tensor]]


def _batch_index(indices: Indices, device) -> Tuple[Tensor, Tensor]:
    """(clip index, prediction index) of every matched prediction, clip 0 first."""
    clip = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    src = torch.cat([src for src, _ in indices])
    return clip.to(device), src.to(device)


class SetCriterion(nn.Module):
    """All EVAD training losses, each already multiplied by its weight, in one flat dict.

    Names: ``loss_ce``, ``loss_bbox``, ``loss_giou`` for the last localization stage and
    ``loss_{ce,bbox,giou}_stage{k}`` for earlier stages k; ``loss_action`` for the last decoder layer
    and ``loss_action_layer{k}`` for earlier layers.
    """

    @configurable
    def __init__(
        self,
        *,
        class_weight: float = 2.0,
        l1_weight: float = 5.0,
        giou_weight: float = 2.0,
        action_weight: float = 12.0,
        no_object_weight: float = 0.1,
        deep_supervision: bool = True,
        matcher: Optional[HungarianMatcher] = None,
    ):
        """
        Args:
            class_weight, l1_weight, giou_weight, action_weight: loss weights.
            no_object_weight: weight of the no-object class in the cross-entropy.
            deep_supervision: also supervise intermediate stages and decoder layers.
            matcher: the assignment; by default a :class:`HungarianMatcher` whose costs are the
                class, L1 and GIoU loss weights (as in WOO/EVAD).
        """
        super().__init__()
        self.class_weight = class_weight
        self.l1_weight = l1_weight
        self.giou_weight = giou_weight
        self.action_weight = action_weight
        self.deep_supervision = deep_supervision
        self.matcher = matcher or HungarianMatcher(class_weight, l1_weight, giou_weight)
        self.register_buffer("class_loss_weight", torch.tensor([1.0, no_object_weight]), persistent=False)

    @classmethod
    def from_config(cls, cfg):
        loss = cfg.MODEL.EVAD.LOSS
        return {
            "class_weight": loss.CLASS_WEIGHT,
            "l1_weight": loss.L1_WEIGHT,
            "giou_weight": loss.GIOU_WEIGHT,
            "action_weight": loss.ACTION_WEIGHT,
            "no_object_weight": loss.NO_OBJECT_WEIGHT,
            "deep_supervision": loss.DEEP_SUPERVISION,
        }

    @staticmethod
    def num_boxes(targets: Sequence[Dict], device) -> float:
        """Ground-truth boxes per process, averaged over processes, at least 1."""
        total = torch.tensor([float(sum(len(t["boxes"]) for t in targets))], device=device)
        world = comm.get_world_size()
        if world > 1:
            dist.all_reduce(total)
        return max(total.item() / world, 1.0)

    def loss_labels(self, logits: Tensor, indices: Indices) -> Tensor:
        """Weighted-mean cross-entropy over all proposals (person for matched ones, else no-object)."""
        target = torch.ones(logits.shape[:2], dtype=torch.int64, device=logits.device)  # 1 = no-object
        target[_batch_index(indices, logits.device)] = 0
        weight = self.class_loss_weight.to(logits.dtype)
        return F.cross_entropy(logits.transpose(1, 2), target, weight=weight)

    def loss_boxes(
        self, boxes: Tensor, targets: Sequence[Dict], indices: Indices, num_boxes: float
    ) -> Tuple[Tensor, Tensor]:
        """Sum over matched pairs of the L1 distance (in image-size units) and of 1 - GIoU, / num_boxes."""
        clip, pred = _batch_index(indices, boxes.device)
        src = boxes[clip, pred]
        tgt = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)]).to(src)
        whwh = torch.stack([image_size_whwh(t["image_size"], src) for t in targets])[clip]
        loss_l1 = F.l1_loss(src / whwh, tgt / whwh, reduction="sum") / num_boxes
        loss_giou = generalized_box_iou_loss(src, tgt, reduction="sum") / num_boxes
        return loss_l1, loss_giou

    @staticmethod
    def loss_actions(logits: Tensor, targets: Sequence[Dict], indices: Indices) -> Tensor:
        """Mean binary cross-entropy over matched proposals and classes (0 when nothing matched)."""
        src = logits[_batch_index(indices, logits.device)]
        tgt = torch.cat([t["actions"][j] for t, (_, j) in zip(targets, indices)]).to(src)
        loss = F.binary_cross_entropy_with_logits(src, tgt, reduction="sum")
        return loss / max(src.numel(), 1)

    def forward(
        self,
        loc_outputs: List[Dict[str, Tensor]],
        action_logits: Optional[List[Tensor]],
        targets: Sequence[Dict],
    ) -> Dict[str, Tensor]:
        """
        Args:
            loc_outputs: one dict per localization stage with "pred_logits" (B, n, 2) and
                "pred_boxes" (B, n, 4) absolute XYXY, the last stage last.
            action_logits: one (B, n, C) tensor per decoder layer, the last layer last (None or
                empty: no action loss).
            targets: B dicts with "boxes" (m_i, 4) absolute XYXY, "image_size" (h, w) unpadded,
                and "actions" (m_i, C) float multi-hot (only needed with action logits).

        Returns:
            Dict of weighted scalar losses.
        """
        if not loc_outputs:
            raise ValueError("SetCriterion: no localization outputs")
        device = loc_outputs[-1]["pred_boxes"].device
        num_boxes = self.num_boxes(targets, device)
        losses = {}
        last = len(loc_outputs) - 1
        stages = range(len(loc_outputs)) if self.deep_supervision else [last]
        last_indices = None
        for k in stages:
            # Losses are computed and reported in float32 whatever dtype autocast gave the heads
            # (half-precision sums over proposals and classes would round, and metrics expect float32).
            out = {name: v.float() for name, v in loc_outputs[k].items()}
            indices = self.matcher(out, targets)
            if k == last:
                last_indices = indices
            suffix = "" if k == last else f"_stage{k}"
            l1, giou = self.loss_boxes(out["pred_boxes"], targets, indices, num_boxes)
            losses["loss_ce" + suffix] = self.class_weight * self.loss_labels(out["pred_logits"], indices)
            losses["loss_bbox" + suffix] = self.l1_weight * l1
            losses["loss_giou" + suffix] = self.giou_weight * giou

        if action_logits:
            last = len(action_logits) - 1
            layers = range(len(action_logits)) if self.deep_supervision else [last]
            for k in layers:
                name = "loss_action" if k == last else f"loss_action_layer{k}"
                losses[name] = self.action_weight * self.loss_actions(action_logits[k].float(), targets, last_indices)
        return losses
