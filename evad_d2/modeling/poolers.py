"""The actor pooler of EVAD's action heads: RoI extension and the "3D RoIAlign" (paper 3.3, Fig. 6).

A keyframe box is copied to every temporal slice of the restored token map, widened to cover the
actor's motion, pooled per slice with RoIAlign, max-pooled over the RoI and averaged over time.
:class:`ROIPooler3D` is that as a module owning its settings (as detectron2's ``ROIPooler``);
:func:`extend_boxes` and :func:`roi_align_3d` are its two steps.
"""
from typing import List, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align

__all__ = ["ROIPooler3D", "extend_boxes", "roi_align_3d"]


class ROIPooler3D(nn.Module):
    """One feature per actor box from a spatio-temporal map: :func:`extend_boxes`, then
    :func:`roi_align_3d`. No parameters (adds nothing to a state dict).

    Args:
        output_size: RoIAlign output resolution S (S x S bins per slice).
        stride: pixels per cell of the pooled map (the backbone's patch size, 16).
        sampling_ratio: RoIAlign samples per bin side (0: adaptive).
        roi_extend: (x, y) RoI extension ratios; (0, 0) pools the boxes as they are.
    """

    def __init__(
        self,
        output_size: int = 7,
        *,
        stride: int = 16,
        sampling_ratio: int = 2,
        roi_extend: Tuple[float, float] = (0.4, 0.2),
    ):
        super().__init__()
        self.output_size = output_size
        self.stride = stride
        self.sampling_ratio = sampling_ratio
        self.roi_extend = tuple(float(r) for r in roi_extend)

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, stride={self.stride}, sampling_ratio={self.sampling_ratio}, "
            f"roi_extend={self.roi_extend}"
        )

    def forward(self, feature_map: Tensor, boxes: Tensor, image_sizes: Tensor) -> Tensor:
        """
        Args:
            feature_map: (B, C, T', H', W') map at ``stride``.
            boxes: (B, n, 4) absolute XYXY keyframe boxes in input pixels.
            image_sizes: (B, 2) unpadded (h, w) of each clip; extended boxes are clipped to it.

        Returns:
            (B, n, C) actor features.
        """
        extended = [extend_boxes(b, size, self.roi_extend) for b, size in zip(boxes, image_sizes)]
        pooled = roi_align_3d(feature_map, extended, 1.0 / self.stride, self.output_size, self.sampling_ratio)
        return pooled.view(boxes.shape[0], boxes.shape[1], feature_map.shape[1])


def extend_boxes(
    boxes: Tensor,
    image_size: Union[Tensor, Sequence[int]],
    ratio: Tuple[float, float] = (0.4, 0.2),
) -> Tensor:
    """Grow boxes around their centre and clip them to the image (the paper's RoI extension).

    Each side moves out by ``ratio[0] * (w + 1) / 2`` in x and ``ratio[1] * (h + 1) / 2`` in y, where
    ``w = x2 - x1`` and ``h = y2 - y1``; the "+1" is the official code's pixel-inclusive box size, kept
    so that converted checkpoints see the same RoIs. The result is clipped to ``[0, W - 1]`` x
    ``[0, H - 1]``, again as the official code does.

    Args:
        boxes: (N, 4) absolute XYXY boxes.
        image_size: (h, w) of the unpadded image the boxes live in (numbers or a (2,) tensor).
        ratio: (x, y) extension ratios; (0, 0) leaves the boxes unchanged apart from clipping.

    Returns:
        (N, 4) extended, clipped boxes (a new tensor; differentiable w.r.t. ``boxes``).
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"extend_boxes: boxes must be (N, 4), got {tuple(boxes.shape)}")
    if len(ratio) != 2:
        raise ValueError(f"extend_boxes: ratio must be (x, y), got {ratio!r}")
    # A tensor size stays a tensor (no host sync; traceable by torch.export).
    height, width = torch.as_tensor(image_size, dtype=boxes.dtype, device=boxes.device).unbind()
    x1, y1, x2, y2 = boxes.unbind(-1)
    pad_x = float(ratio[0]) * (x2 - x1 + 1.0) / 2.0
    pad_y = float(ratio[1]) * (y2 - y1 + 1.0) / 2.0
    x1 = (x1 - pad_x).clamp(min=0.0).minimum(width - 1.0)
    x2 = (x2 + pad_x).clamp(min=0.0).minimum(width - 1.0)
    y1 = (y1 - pad_y).clamp(min=0.0).minimum(height - 1.0)
    y2 = (y2 + pad_y).clamp(min=0.0).minimum(height - 1.0)
    return torch.stack([x1, y1, x2, y2], dim=-1)


def roi_align_3d(
    feature: Tensor,
    boxes: List[Tensor],
    spatial_scale: float = 1.0 / 16,
    output_size: int = 7,
    sampling_ratio: int = 2,
) -> Tensor:
    """Pool one feature vector per box from a spatio-temporal map.

    The same keyframe box is used on every temporal slice: RoIAlign (``aligned=True``, i.e.
    detectron2's ROIAlignV2) on each slice, max over the ``output_size`` x ``output_size`` bins, then
    the mean over the T slices.

    Args:
        feature: (B, C, T, H, W) feature map.
        boxes: B tensors of shape (n_i, 4), absolute XYXY boxes in input-image pixels.
        spatial_scale: feature-map size / image size (1 / patch stride).
        output_size: RoIAlign output resolution.
        sampling_ratio: RoIAlign samples per bin side.

    Returns:
        (sum n_i, C) pooled features, boxes of clip 0 first.
    """
    if feature.dim() != 5:
        raise ValueError(f"roi_align_3d: feature must be (B, C, T, H, W), got {tuple(feature.shape)}")
    batch, channels, frames, height, width = feature.shape
    if len(boxes) != batch:
        raise ValueError(f"roi_align_3d: got {len(boxes)} box lists for a batch of {batch}")
    num_boxes = sum(b.shape[0] for b in boxes)
    if num_boxes == 0:
        return feature.new_zeros((0, channels))

    # Fold time into the batch: slice t of clip b is image b * T + t, and each box is repeated
    # once per slice, so a single roi_align call covers every (box, slice) pair.
    slices = feature.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, height, width)
    time = torch.arange(frames, device=feature.device, dtype=feature.dtype)
    rois = []
    for b, clip_boxes in enumerate(boxes):
        n = clip_boxes.shape[0]
        image_index = (b * frames + time).repeat(n)[:, None]  # (n * T, 1), box-major
        rois.append(torch.cat([image_index, clip_boxes.to(feature.dtype).repeat_interleave(frames, 0)], 1))
    pooled = roi_align(
        slices, torch.cat(rois), output_size, spatial_scale, sampling_ratio, aligned=True
    )  # (sum n_i * T, C, S, S)
    pooled = pooled.amax(dim=(-2, -1)).view(num_boxes, frames, channels)
    return pooled.mean(dim=1)
