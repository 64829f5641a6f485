"""EVAD's inference post-processing in tensor ops only: head outputs -> the actors of a clip.

One copy for eager inference (``EVAD.inference`` and ``EVAD.postprocess``, which wrap the results
in detectron2's ``Instances``) and the exported graph (``evad_d2.export.ExportableEVAD``).
Nothing here asserts on values or builds ``Boxes``, so ``torch.jit.trace`` and ``torch.export``
trace it with the person-score threshold kept dynamic.

The two modes (see ``evad_d2.modeling.meta_arch.evad.OFFICIAL_MODE``):

* default: probability > threshold; boxes clipped to [0, w] x [0, h] of the unpadded clip, then
  scaled to the output size, clipped to it and empty boxes dropped (detectron2's
  ``detector_postprocess``, in the same float32 arithmetic);
* official: probability >= threshold; boxes clipped to [0, w-1] x [0, h-1], scaled, clamped to
  [0, W] x [0, H], empty boxes kept.
"""
from typing import Dict, Tuple

import torch
from torch import Tensor

__all__ = ["clip_boxes", "detection_probabilities", "keep_mask", "rescale_boxes", "select_detections"]


def clip_boxes(boxes: Tensor, height: int, width: int, official: bool = False) -> Tensor:
    """(N, 4) XYXY boxes clipped to a ``height`` x ``width`` image: to [0, width] x [0, height]
    (continuous pixel coordinates), or with ``official`` to [0, width - 1] x [0, height - 1] (the
    official code's pixel-index convention)."""
    x_max, y_max = (width - 1, height - 1) if official else (width, height)
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([x1.clamp(0, x_max), y1.clamp(0, y_max), x2.clamp(0, x_max), y2.clamp(0, y_max)], dim=-1)


def detection_probabilities(loc_output: Dict[str, Tensor], action_logits: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Person probabilities (B, n), boxes (B, n, 4) and action probabilities (B, n, C) of all
    proposals, float32.

    Args:
        loc_output: the last localization stage, "pred_logits" (B, n, 2) [person, no-object] and
            "pred_boxes" (B, n, 4) absolute XYXY.
        action_logits: (B, n, C) of the action head's last layer.
    """
    # float(): under autocast (bf16/fp16 inference) the heads' outputs are half precision;
    # outputs stay float32 so that thresholds, numpy conversion and evaluation are unchanged.
    person = loc_output["pred_logits"].float().softmax(-1)[..., 0]
    return person, loc_output["pred_boxes"].float(), action_logits.float().sigmoid()


def keep_mask(person: Tensor, score_thresh: float, *, official: bool, keep_all_if_none: bool) -> Tensor:
    """(n,) bool: the proposals of one clip that are output, from their (n,) person probabilities:
    above ``score_thresh`` (at least it with ``official``); all of them where none passes, with
    ``keep_all_if_none``."""
    keep = person >= score_thresh if official else person > score_thresh
    if keep_all_if_none:
        keep = keep | ~keep.any()
    return keep


def select_detections(
    person: Tensor,
    boxes: Tensor,
    actions: Tensor,
    image_size: Tuple[int, int],
    *,
    score_thresh: float,
    official: bool,
    keep_all_if_none: bool,
) -> Tuple[Tensor, Tensor, Tensor]:
    """The kept proposals of one clip (:func:`keep_mask`), boxes clipped to its unpadded size.

    Args:
        person: (n,) person probabilities; boxes: (n, 4) XYXY; actions: (n, C) probabilities.
        image_size: (h, w) of the unpadded clip.

    Returns:
        boxes (N, 4), person scores (N,), action scores (N, C) of the N kept proposals.
    """
    keep = keep_mask(person, score_thresh, official=official, keep_all_if_none=keep_all_if_none)
    return clip_boxes(boxes[keep], *image_size, official=official), person[keep], actions[keep]


def rescale_boxes(
    boxes: Tensor, image_size: Tuple[int, int], output_size: Tuple[int, int], *, official: bool
) -> Tuple[Tensor, Tensor]:
    """(N, 4) boxes of an ``image_size`` (h, w) clip scaled to ``output_size`` (H, W) and clipped to
    [0, W] x [0, H], and the (N,) bool mask of those that are output: the non-empty ones (positive
    width and height; detectron2's ``detector_postprocess``), or all of them with ``official``."""
    (h, w), (out_h, out_w) = image_size, output_size
    boxes = boxes.clone()
    boxes[:, 0::2] *= out_w / w
    boxes[:, 1::2] *= out_h / h
    boxes = clip_boxes(boxes, out_h, out_w)
    if official:
        return boxes, torch.ones_like(boxes[:, 0], dtype=torch.bool)
    return boxes, (boxes[:, 2] - boxes[:, 0] > 0) & (boxes[:, 3] - boxes[:, 1] > 0)
