"""One-to-one (Hungarian) assignment of proposals to ground-truth persons (DETR / Sparse R-CNN / WOO)."""
from typing import Dict, List, Sequence, Tuple

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import generalized_box_iou

__all__ = ["HungarianMatcher", "image_size_whwh"]


def image_size_whwh(image_size, like: Tensor) -> Tensor:
    """(4,) tensor (w, h, w, h) from an (h, w) pair, on ``like``'s device and dtype."""
    h, w = (float(s) for s in image_size)
    return torch.tensor([w, h, w, h], dtype=like.dtype, device=like.device)


class HungarianMatcher(nn.Module):
    """Match each ground-truth box to one prediction, minimising

    ``cost_class * (-p_person) + cost_bbox * L1(boxes / image size) + cost_giou * (-GIoU)``.

    Predictions left unmatched are trained as no-object.
    """

    def __init__(self, cost_class: float = 2.0, cost_bbox: float = 5.0, cost_giou: float = 2.0):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("HungarianMatcher: all costs are 0")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou

    def cost_matrix(self, logits: Tensor, boxes: Tensor, gt_boxes: Tensor, image_size) -> Tensor:
        """(n, m) matching cost of one clip's n predictions against its m ground-truth boxes.

        Args:
            logits: (n, 2) [person, no-object] logits.
            boxes: (n, 4) predicted absolute XYXY boxes.
            gt_boxes: (m, 4) ground-truth absolute XYXY boxes.
            image_size: (h, w) of the unpadded image, to normalise the L1 cost.
        """
        person_prob = logits.softmax(-1)[:, 0]
        whwh = image_size_whwh(image_size, boxes)
        cost_bbox = torch.cdist(boxes / whwh, gt_boxes.to(boxes.dtype) / whwh, p=1)
        cost_giou = -generalized_box_iou(boxes, gt_boxes.to(boxes.dtype))
        return self.cost_class * -person_prob[:, None] + self.cost_bbox * cost_bbox + self.cost_giou * cost_giou

    @torch.no_grad()
    def forward(self, outputs: Dict[str, Tensor], targets: Sequence[Dict]) -> List[Tuple[Tensor, Tensor]]:
        """
        Args:
            outputs: "pred_logits" (B, n, 2) and "pred_boxes" (B, n, 4) absolute XYXY.
            targets: B dicts with "boxes" (m_i, 4) absolute XYXY and "image_size" (h, w).

        Returns:
            B pairs (pred_idx, gt_idx) of int64 CPU tensors of length min(n, m_i): prediction
            ``pred_idx[k]`` is matched to ground truth ``gt_idx[k]``.
        """
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        if len(targets) != logits.shape[0]:
            raise ValueError(f"HungarianMatcher: {len(targets)} targets for a batch of {logits.shape[0]}")
        indices = []
        for b, target in enumerate(targets):
            gt_boxes = target["boxes"]
            if gt_boxes.shape[0] == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                indices.append((empty, empty.clone()))
                continue
            cost = self.cost_matrix(logits[b].float(), boxes[b].float(), gt_boxes.float(), target["image_size"])
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices
