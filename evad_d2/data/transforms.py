"""Clip-level augmentation: one random draw per clip, applied identically to every frame and box.

Geometry reuses detectron2's augmentations (``ResizeShortestEdge``, ``RandomFlip``): they are asked
for a transform from the keyframe's size only, and the resulting ``TransformList`` maps boxes
with its usual ``apply_box``. Pixels are transformed here, on the whole (3, T, H, W) tensor at
once, with the same geometry conventions as those transforms (corner-aligned resize, flip
``x -> W - x``), so boxes and pixels stay aligned.

Two resize interpolations (:data:`INTERPOLATIONS`):

* ``"bilinear"`` (default): torch's bilinear on float pixels, antialiased when shrinking.
* ``"opencv"``: OpenCV's ``cv2.resize(..., interpolation=INTER_LINEAR)`` on uint8 frames, bit for
  bit, as the official EVAD code resizes its test frames (see :func:`resize_uint8_opencv`).

A uint8 clip is resized before it becomes float, frame by frame, so the memory a clip needs
follows the model's input size, not the video's (a float copy of a 16-frame 4K clip is 1.6 GB).
"""
from typing import List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import transforms as T

__all__ = [
    "INTERPOLATIONS",
    "sample_clip_transform",
    "apply_transform_to_clip",
    "color_jitter_clip",
    "clip_output_size",
    "resize_uint8_opencv",
]

INTERPOLATIONS = ("bilinear", "opencv")

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


def apply_transform_to_clip(tfm: T.Transform, clip: torch.Tensor, *, interpolation: str = "bilinear") -> torch.Tensor:
    """Apply resize/flip transforms to every frame of a clip.

    Args:
        tfm: a transform or TransformList of ResizeTransform, HFlipTransform, VFlipTransform,
            NoOpTransform.
        clip: (3, T, H, W), float or uint8 (RGB in [0, 255]). A uint8 clip is resized frame by
            frame before it becomes float: no float copy of the full-resolution clip is made.
        interpolation: one of :data:`INTERPOLATIONS`; ``"opencv"`` needs a uint8 clip.

    Returns:
        float tensor (3, T, H', W').
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if interpolation == "opencv" and clip.dtype != torch.uint8:
        raise TypeError(
            f"the OpenCV-exact resize works on uint8 frames (the official code resizes decoded uint8 frames), "
            f"got a {clip.dtype} clip: pass the frames before converting them to float"
        )
    transforms = tfm.transforms if isinstance(tfm, T.TransformList) else [tfm]
    for t in transforms:
        if isinstance(t, T.TransformList):
            clip = apply_transform_to_clip(t, clip, interpolation=interpolation)
        elif isinstance(t, T.ResizeTransform):
            if (t.new_h, t.new_w) != tuple(clip.shape[-2:]):
                clip = _resize_clip(clip, (t.new_h, t.new_w), interpolation)
        elif isinstance(t, T.HFlipTransform):
            clip = clip.flip(-1)
        elif isinstance(t, T.VFlipTransform):
            clip = clip.flip(-2)
        elif not isinstance(t, T.NoOpTransform):
            raise TypeError(f"{type(t).__name__} is not supported on clips (resize and flips are)")
    return clip.float().contiguous()


def _resize_clip(clip: torch.Tensor, size: Tuple[int, int], interpolation: str) -> torch.Tensor:
    """(3, T, H, W) -> (3, T, h, w): float for a float clip or "bilinear", uint8 for "opencv"."""
    if interpolation == "opencv":
        out = clip.new_empty((*clip.shape[:2], *size))
        for i in range(clip.shape[1]):
            out[:, i] = resize_uint8_opencv(clip[:, i], size)
        return out
    # Antialiasing widens the bilinear filter when shrinking, so downscaling does not alias; for
    # enlarging it changes nothing and only costs time.
    shrink = size[0] < clip.shape[-2] or size[1] < clip.shape[-1]
    if clip.is_floating_point():
        return F.interpolate(
            clip.transpose(0, 1), size=size, mode="bilinear", align_corners=False, antialias=shrink
        ).transpose(0, 1)
    # One frame at a time: only one full-resolution frame is float at any moment.
    out = torch.empty((*clip.shape[:2], *size), dtype=torch.float32, device=clip.device)
    for i in range(clip.shape[1]):
        frame = clip[:, i].unsqueeze(0).float()
        out[:, i] = F.interpolate(frame, size=size, mode="bilinear", align_corners=False, antialias=shrink)[0]
    return out


# OpenCV's fixed-point bilinear for 8-bit images (imgproc/src/resize.cpp, INTER_RESIZE_COEF_BITS).
_COEF_BITS = 11
_COEF_SCALE = 1 << _COEF_BITS


def _opencv_linear_taps(src: int, dst: int, clamp_coefs: bool):
    """Source indices (i0, i1) and 11-bit weights (w0, w1) of each of ``dst`` outputs, computed
    as OpenCV computes them: the source position in float32 from a float64 scale, weights
    rounded half to even. Columns (``clamp_coefs``) outside the image get weights (2048, 0);
    rows keep their weights and read the border row twice, as OpenCV does."""
    scale = 1.0 / (dst / src)
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f)
    f = (f - s).astype(np.float32)
    s = s.astype(np.int64)
    if clamp_coefs:
        outside = (s < 0) | (s >= src - 1)
        f[outside] = 0.0
        s = np.where(s < 0, 0, np.where(s >= src - 1, src - 1, s))
    w0 = np.rint((np.float32(1.0) - f) * np.float32(_COEF_SCALE)).astype(np.int32)
    w1 = np.rint(f * np.float32(_COEF_SCALE)).astype(np.int32)
    i0 = np.clip(s, 0, src - 1)
    i1 = np.clip(s + 1, 0, src - 1)
    return (torch.from_numpy(a) for a in (i0, i1, w0, w1))


def resize_uint8_opencv(image: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """``cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)`` of a uint8 image, bit for bit.

    OpenCV computes 8-bit bilinear in fixed point: each output pixel's horizontal pass is
    ``S = p0 * a0 + p1 * a1`` with 11-bit integer weights (exact), the vertical one
    ``((((S0 >> 4) * b0) >> 16) + (((S1 >> 4) * b1) >> 16) + 2) >> 2``, the formula of both its
    vector and its scalar code, so the result does not depend on the CPU's vector width.
    Where both sides halve exactly OpenCV switches to INTER_AREA, a 2x2 average
    ``(a + b + c + d + 2) >> 2``, which this formula equals there (weights 1024, 1024). An
    unchanged size is a copy. Checked against OpenCV 4.5.5 and 5.0 on random sizes (enlarging,
    shrinking, exact halving, 1-pixel sides, odd sizes, saturated images).

    Args:
        image: uint8 (..., H, W); channels are independent (any layout in front of H, W).
        size: output (h, w), both >= 1.

    Returns:
        uint8 (..., h, w).
    """
    if image.dtype != torch.uint8:
        raise TypeError(f"resize_uint8_opencv needs a uint8 image, got {image.dtype}")
    h, w = (int(v) for v in size)
    src_h, src_w = image.shape[-2:]
    if min(h, w) < 1 or min(src_h, src_w) < 1:
        raise ValueError(f"cannot resize a {src_h}x{src_w} image to {h}x{w}: sides must be >= 1")
    if (h, w) == (src_h, src_w):
        return image.clone()
    dev = image.device
    yi0, yi1, yw0, yw1 = (t.to(dev) for t in _opencv_linear_taps(src_h, h, clamp_coefs=False))
    xi0, xi1, xw0, xw1 = (t.to(dev) for t in _opencv_linear_taps(src_w, w, clamp_coefs=True))

    def horizontal(rows: torch.Tensor) -> torch.Tensor:  # (..., h, W) uint8 -> (..., h, w) int32
        rows = rows.to(torch.int32)
        return rows.index_select(-1, xi0) * xw0 + rows.index_select(-1, xi1) * xw1

    s0 = horizontal(image.index_select(-2, yi0))
    s1 = horizontal(image.index_select(-2, yi1))
    b0, b1 = yw0.view(-1, 1), yw1.view(-1, 1)
    out = ((((s0 >> 4) * b0) >> 16) + (((s1 >> 4) * b1) >> 16) + 2) >> 2
    return out.clamp_(0, 255).to(torch.uint8)


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
