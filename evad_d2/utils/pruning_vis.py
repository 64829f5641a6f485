"""Pictures of what EVAD keeps and attends to (paper Fig. 4/11 and Fig. 12).

:func:`inspect_clip` runs the model once on a clip with forward hooks (no change to the model's
computation) and records:

* after every pruning block, which tokens of the (T', H', W') grid survive;
* the localization head's proposals (boxes, person scores);
* the attention of every actor query over the context tokens in a decoder layer.

:func:`render_pruning_grid` draws the survivors (one row per pruning block, one column per
tubelet, dropped tokens greyed out); :func:`render_decoder_attention` overlays an actor's
decoder attention on the clip's frames.
"""

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageDraw

__all__ = ["ClipInspection", "inspect_clip", "render_pruning_grid", "render_decoder_attention", "clip_to_frames"]


@dataclass
class ClipInspection:
    """What :func:`inspect_clip` records for one clip (batch of 1).

    Attributes:
        grid: (T', H', W') token grid of the padded clip.
        patch_size, tubelet_size: pixels per token side, frames per token.
        image_size: (h, w) of the (resized, unpadded) clip the model saw.
        keyframe_slice: temporal token index of the keyframe (never pruned).
        kept: {block index: bool (T', H', W')} tokens alive after that pruning block.
        token_index: (M,) flat grid positions of the encoder's output tokens (keyframe first).
        proposal_boxes: (n, 4) XYXY boxes of the last localization stage, in clip pixels, clipped
            to the clip.
        person_scores: (n,) person probabilities.
        decoder_attention: (n, M) head-averaged attention of each actor query over the M context
            tokens (columns in ``token_index`` order) in the inspected decoder layer; None when
            the action head has no decoder.
    """

    grid: Tuple[int, int, int]
    patch_size: int
    tubelet_size: int
    image_size: Tuple[int, int]
    keyframe_slice: int
    kept: Dict[int, np.ndarray]
    token_index: np.ndarray
    proposal_boxes: np.ndarray
    person_scores: np.ndarray
    decoder_attention: Optional[np.ndarray]

    def attention_map(self, actors: Union[int, Sequence[int]]) -> np.ndarray:
        """(T', H', W') mean attention of the given actor queries; NaN at dropped tokens."""
        if self.decoder_attention is None:
            raise ValueError(
                "this model's action head has no decoder (MODEL.EVAD.ACTION_HEAD 'linear'): no decoder attention"
            )
        actors = [actors] if isinstance(actors, (int, np.integer)) else list(actors)
        n = self.decoder_attention.shape[0]
        bad = [a for a in actors if not 0 <= a < n]
        if not actors or bad:
            raise ValueError(f"actor indices must be in [0, {n}), got {actors}")
        flat = np.full(int(np.prod(self.grid)), np.nan)
        flat[self.token_index] = self.decoder_attention[actors].mean(0)
        return flat.reshape(self.grid)


def _record_forward(model: torch.nn.Module, inputs: Dict, decoder_layer: int) -> Dict:
    """One forward of ``model`` on ``inputs`` with hooks recording, on the CPU: ``kept_index``
    ({pruning block: kept token indices}), ``token_index``, the last localization stage's
    ``logits`` and ``boxes``, and (with a decoder) the actor queries' ``attention`` over the
    context tokens in block ``decoder_layer``."""
    net = model.backbone.net
    record: Dict = {"kept_index": {}}
    hooks = []

    def block_hook(i):
        def hook(module, args, output):
            record["kept_index"][i] = output[1][0].detach().cpu()

        return hook

    def net_hook(module, args, output):
        record["token_index"] = output["token_index"][0].detach().cpu()

    def loc_hook(module, args, output):
        last = output[0][-1]
        record["logits"] = last["pred_logits"][0].detach().float().cpu()
        record["boxes"] = last["pred_boxes"][0].detach().float().cpu()

    def attn_hook(module, args, output):
        x = args[0]
        with torch.no_grad():
            probs = module.attention_probs(x)[0].mean(0)  # (M + n, M + n), heads averaged
        m = record["token_index"].numel()
        record["attention"] = probs[m:, :m].float().cpu()

    for i, rate in enumerate(net.keep_rates):
        if rate < 1.0:
            hooks.append(net.blocks[i].register_forward_hook(block_hook(i)))
    hooks.append(net.register_forward_hook(net_hook))
    hooks.append(model.localization_head.register_forward_hook(loc_hook))
    blocks = getattr(model.action_head, "blocks", None)
    if blocks is not None and len(blocks):
        hooks.append(blocks[decoder_layer].attn.register_forward_hook(attn_hook))
    try:
        with torch.no_grad():
            model([inputs])
    finally:
        for h in hooks:
            h.remove()
    return record


def inspect_clip(model: torch.nn.Module, inputs: Dict, decoder_layer: int = -1) -> ClipInspection:
    """Run an EVAD model on one clip and record pruning, proposals and decoder attention.

    Args:
        model: an :class:`~evad_d2.modeling.meta_arch.evad.EVAD` (its mode is left unchanged; use eval).
        inputs: one model input dict (``"clip"`` (3, T, H, W) as the model takes it, e.g. from
            ``EVADPredictor.preprocess``).
        decoder_layer: index of the decoder block whose attention is recorded (default: the last).

    Returns:
        the recorded :class:`ClipInspection`.
    """
    record = _record_forward(model, inputs, decoder_layer)
    net = model.backbone.net

    clip = inputs["clip"]
    divisibility = model.backbone.size_divisibility
    padded = [int(np.ceil(s / divisibility) * divisibility) for s in clip.shape[-2:]]
    grid = net.token_grid((clip.shape[1], *padded))
    kept = {}
    for i, index in record["kept_index"].items():
        mask = np.zeros(int(np.prod(grid)), dtype=bool)
        mask[index.numpy()] = True
        kept[i] = mask.reshape(grid)
    attention = record.get("attention")
    # Clipped to the image, as the model's inference clips its output boxes.
    h, w = int(clip.shape[-2]), int(clip.shape[-1])
    boxes = record["boxes"].clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    return ClipInspection(
        grid=tuple(grid),
        patch_size=net.patch_size,
        tubelet_size=net.tubelet_size,
        image_size=(h, w),
        keyframe_slice=net.keyframe_slice(clip.shape[1]),
        kept=kept,
        token_index=record["token_index"].numpy(),
        proposal_boxes=boxes.numpy(),
        person_scores=record["logits"].softmax(-1)[:, 0].numpy(),
        decoder_attention=None if attention is None else attention.numpy(),
    )


def clip_to_frames(clip: Union[torch.Tensor, np.ndarray], inspection: ClipInspection) -> np.ndarray:
    """One uint8 RGB frame per tubelet (its first frame), zero-padded to the token grid.

    Args:
        clip: (3, T, H, W) RGB in [0, 255], the clip the model saw.

    Returns:
        uint8 (T', H' * patch, W' * patch, 3).
    """
    clip = torch.as_tensor(clip).detach().float().cpu()
    frames = clip[:, :: inspection.tubelet_size].clamp(0, 255).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()
    t, gh, gw = inspection.grid
    if frames.shape[0] != t:
        raise ValueError(f"clip has {frames.shape[0]} tubelets but the inspection's grid has {t}")
    out = np.zeros((t, gh * inspection.patch_size, gw * inspection.patch_size, 3), dtype=np.uint8)
    out[:, : frames.shape[1], : frames.shape[2]] = frames
    return out


def _token_mask_to_pixels(mask: np.ndarray, patch: int) -> np.ndarray:
    return np.repeat(np.repeat(mask, patch, axis=0), patch, axis=1)


def _grid_canvas(rows: int, cols: int, cell_h: int, cell_w: int, pad: int, left: int = 0) -> Image.Image:
    return Image.new(
        "RGB", (left + cols * cell_w + (cols + 1) * pad, rows * cell_h + (rows + 1) * pad), (255, 255, 255)
    )


def _cell_origin(row: int, col: int, cell_h: int, cell_w: int, pad: int, left: int = 0) -> Tuple[int, int]:
    return left + pad + col * (cell_w + pad), pad + row * (cell_h + pad)


def render_pruning_grid(
    clip: Union[torch.Tensor, np.ndarray],
    inspection: ClipInspection,
    *,
    pad: int = 2,
    dropped_color: Tuple[int, int, int] = (235, 235, 235),
    dropped_alpha: float = 0.85,
    label_width: int = 0,
) -> Image.Image:
    """The paper's Fig. 4: surviving tokens after each pruning block.

    Row ``r`` shows the output of the ``r``-th pruning block (ascending block index); column
    ``j`` the first frame of tubelet ``j``. A dropped token's ``patch x patch`` square becomes
    ``dropped_alpha * dropped_color + (1 - dropped_alpha) * pixel`` (rounded). Cells are
    ``pad`` pixels apart on white; the image is ``(label_width + cols * W + (cols + 1) * pad)``
    wide and ``(rows * H + (rows + 1) * pad)`` high, W x H being the padded clip size.

    Args:
        clip: (3, T, H, W) RGB in [0, 255], the clip the model saw (``inputs["clip"]``).
        inspection: from :func:`inspect_clip` on that clip.
        label_width: width of a left margin naming each row's block and token count (0: none).

    Returns:
        PIL RGB image.
    """
    if not inspection.kept:
        raise ValueError("the model prunes in no block (all keep rates are 1): nothing to show")
    frames = clip_to_frames(clip, inspection)
    t, ch, cw = frames.shape[:3]
    blocks = sorted(inspection.kept)
    canvas = _grid_canvas(len(blocks), t, ch, cw, pad, label_width)
    draw = ImageDraw.Draw(canvas)
    grey = np.asarray(dropped_color, dtype=np.float32)
    for r, block in enumerate(blocks):
        mask = inspection.kept[block]
        for j in range(t):
            dropped = ~_token_mask_to_pixels(mask[j], inspection.patch_size)
            cell = frames[j].astype(np.float32)
            cell[dropped] = dropped_alpha * grey + (1.0 - dropped_alpha) * cell[dropped]
            canvas.paste(Image.fromarray(np.round(cell).astype(np.uint8)), _cell_origin(r, j, ch, cw, pad, label_width))
        if label_width:
            _, y = _cell_origin(r, 0, ch, cw, pad, label_width)
            draw.text((4, y + 2), f"block {block + 1}\n{int(mask.sum())} tokens", fill=(0, 0, 0))
    return canvas


def render_decoder_attention(
    clip: Union[torch.Tensor, np.ndarray],
    inspection: ClipInspection,
    actors: Union[int, Sequence[int]],
    *,
    pad: int = 2,
    alpha: float = 0.6,
    cmap: str = "jet",
    dropped_color: Tuple[int, int, int] = (235, 235, 235),
    box_color: Tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """The paper's Fig. 12: an actor's decoder attention over the surviving tokens.

    Top row: the first frame of every tubelet, with the actors' boxes on the keyframe's column.
    Bottom row: the attention (averaged over
    the chosen actors and the heads, divided by its maximum) as a colour map blended with
    weight ``alpha`` over the frames; dropped tokens in ``dropped_color``. Same cell layout as
    :func:`render_pruning_grid` with two rows.

    Args:
        clip: (3, T, H, W) RGB in [0, 255], the clip the model saw.
        inspection: from :func:`inspect_clip`.
        actors: proposal index or indices (see ``inspection.person_scores``).

    Returns:
        PIL RGB image.
    """
    from matplotlib import colormaps

    attn = inspection.attention_map(actors)
    actors = [actors] if isinstance(actors, (int, np.integer)) else list(actors)
    frames = clip_to_frames(clip, inspection)
    t, ch, cw = frames.shape[:3]
    peak = np.nanmax(attn) if np.isfinite(attn).any() else 1.0
    heat = colormaps[cmap](np.nan_to_num(attn / max(peak, 1e-12)))[..., :3] * 255.0  # (T', H', W', 3)

    canvas = _grid_canvas(2, t, ch, cw, pad)
    for j in range(t):
        top = Image.fromarray(frames[j])
        if j == inspection.keyframe_slice:
            draw = ImageDraw.Draw(top)
            for a in actors:
                x1, y1, x2, y2 = inspection.proposal_boxes[a].tolist()
                draw.rectangle([round(x1), round(y1), round(x2), round(y2)], outline=box_color, width=1)
        canvas.paste(top, _cell_origin(0, j, ch, cw, pad))
        kept = _token_mask_to_pixels(np.isfinite(attn[j]), inspection.patch_size)
        overlay = _token_mask_to_pixels(heat[j], inspection.patch_size)
        cell = frames[j].astype(np.float32)
        cell[kept] = alpha * overlay[kept] + (1.0 - alpha) * cell[kept]
        cell[~kept] = np.asarray(dropped_color, dtype=np.float32)
        canvas.paste(Image.fromarray(np.round(cell).astype(np.uint8)), _cell_origin(1, j, ch, cw, pad))
    return canvas
