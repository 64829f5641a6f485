"""Clip-level augmentation: one random draw per clip, applied identically to every frame and box.

Geometry reuses detectron2's augmentations (``ResizeShortestEdge``, ``RandomFlip``): they are asked
for a transform from the keyframe's size only, and the resulting ``TransformList`` maps boxes
with its usual ``apply_box``. Pixels are transformed here, on the whole (3, T, H, W) tensor at
once, with the same geometry conventions as those transforms (corner-aligned resize, flip
``x -> W - x``), so boxes and pixels stay aligned.
"""
from typing import List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import transforms as T

__all__ = ["sample_clip_transform", "apply_transform_to_clip", "color_jitter_clip", "clip_output_size"]


def sample_clip_transform(augmentations: Sequence[T.Augmentation], height: int, width: int) -> T.TransformList:
    """Draw one geometric transform for a clip whose frames are ``height`` x ``width``.

    Args:
        augmentations: detectron2 augmentations that only look at the image size (e.g. from
            ``detectron2.data.detection_utils.build_augmentation``).

    Returns:
        the drawn transforms, to be used with ``apply_transform_to_clip`` and ``apply_box``.
    """
    tfms: List[T.Transform] = []
    h, w = height, width
    for aug in augmentations:
        # A zero-stride view: the augmentations read only .shape, so no frame is materialised.
        shape_only = np.broadcast_to(np.zeros((1, 1, 3), dtype=np.uint8), (h, w, 3))
        tfm = aug.get_transform(shape_only)
        h, w = _output_size(tfm, h, w)
        tfms.append(tfm)
    return T.TransformList(tfms)


def _output_size(tfm: T.Transform, h: int, w: int):
    if isinstance(tfm, T.ResizeTransform):
        if (tfm.h, tfm.w) != (h, w):
            raise ValueError(f"resize transform built for {tfm.h}x{tfm.w} applied to {h}x{w}")
        return tfm.new_h, tfm.new_w
    if isinstance(tfm, (T.HFlipTransform, T.VFlipTransform, T.NoOpTransform)):
        return h, w
    if isinstance(tfm, T.TransformList):
        for t in tfm.transforms:
            h, w = _output_size(t, h, w)
        return h, w
    raise TypeError(f"{type(tfm).__name__} is not supported on clips (resize and flips are)")


def clip_output_size(tfm: T.Transform, height: int, width: int):
    """(height, width) of a ``height`` x ``width`` clip after ``tfm``."""
    return _output_size(tfm, height, width)


def apply_transform_to_clip(tfm: T.Transform, clip: torch.Tensor) -> torch.Tensor:
    """Apply resize/flip transforms to every frame of a clip.

    Args:
        tfm: a transform or TransformList of ResizeTransform, HFlipTransform, VFlipTransform,
            NoOpTransform.
        clip: float tensor (3, T, H, W).

    Returns:
        float tensor (3, T, H', W').
    """
    transforms = tfm.transforms if isinstance(tfm, T.TransformList) else [tfm]
    for t in transforms:
        if isinstance(t, T.TransformList):
            clip = apply_transform_to_clip(t, clip)
        elif isinstance(t, T.ResizeTransform):
            if (t.new_h, t.new_w) != tuple(clip.shape[-2:]):
                # Antialiasing widens the bilinear filter when shrinking, so downscaling does not
                # alias; for enlarging it changes nothing and only costs time.
                shrink = t.new_h < clip.shape[-2] or t.new_w < clip.shape[-1]
                clip = F.interpolate(
                    clip.transpose(0, 1), size=(t.new_h, t.new_w), mode="bilinear",
                    align_corners=False, antialias=shrink,
                ).transpose(0, 1)
        elif isinstance(t, T.HFlipTransform):
            clip = clip.flip(-1)
        elif isinstance(t, T.VFlipTransform):
            clip = clip.flip(-2)
        elif not isinstance(t, T.NoOpTransform):
            raise TypeError(f"{type(t).__name__} is not supported on clips (resize and flips are)")
    return clip.contiguous()


def color_jitter_clip(clip: torch.Tensor, strength: float, rng=np.random) -> torch.Tensor:
    """Random brightness, contrast and saturation, one draw for the whole clip.

    Each factor is drawn uniformly from [1 - strength, 1 + strength].

    Args:
        clip: float tensor (3, T, H, W), RGB in [0, 255].

    Returns:
        float tensor (3, T, H, W) in [0, 255].
    """
    if strength <= 0:
        return clip
    b, c, s = (float(v) for v in rng.uniform(1 - strength, 1 + strength, size=3))
    # Brightness x*b, then contrast around the clip's mean grey m, then saturation around each
    # pixel's grey g, folded into one affine map: s*c*b*x + (1-s)*c*b*g(x) + (1-c)*b*mean(g(x)).
    gray = 0.299 * clip[0] + 0.587 * clip[1] + 0.114 * clip[2]  # (T, H, W)
    offset = (1 - c) * b * float(gray.mean())
    out = clip * (s * c * b)
    out.add_(gray.unsqueeze(0), alpha=(1 - s) * c * b).add_(offset)
    return out.clamp_(0.0, 255.0)
