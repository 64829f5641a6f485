"""Pictures of token pruning (paper Fig. 4) and of the decoder's attention for an actor (Fig. 12),
for the keyframe of a video nearest a given time (``tools/visualize_pruning.py``).

The rendering is ``evad_d2.utils.pruning_vis``; this module picks the clip, the actors and the
files.
"""
import logging
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from ..data.video import VideoFrame, read_clip_at
from ..utils.pruning_vis import ClipInspection, inspect_clip, render_decoder_attention, render_pruning_grid
from .video_demo import check_input_video

__all__ = ["ActorSelectionError", "inspect_video_clip", "select_actors", "write_pruning_pictures"]

logger = logging.getLogger("evad_d2.visualize_pruning")


class ActorSelectionError(ValueError):
    """No actor to show: none above the score threshold, or an actor rank out of range."""


def inspect_video_clip(predictor, path: str, time: Optional[float] = None) -> Tuple[VideoFrame, Dict, ClipInspection]:
    """Run the predictor's model on the clip of the keyframe at ``time`` seconds (default: the
    middle of the video) and record what it keeps and attends to.

    Returns:
        ``(keyframe, inputs, inspection)``: the keyframe, the model input of its clip (resized for
        testing, ``inputs["clip"]`` (3, T, H, W)) and :func:`~evad_d2.utils.pruning_vis.inspect_clip`'s record.

    Raises:
        VideoReadError: naming the file when it is missing or unreadable, or ``time`` is past its end.
    """
    if time is None:
        info = check_input_video(path)
        time = (info.num_frames / float(info.fps) if info.num_frames else 0.0) / 2
    keyframe, frames = read_clip_at(
        path, time, predictor.num_frames, predictor.keyframe_index, predictor.sampling_rate / predictor.frame_rate
    )
    inputs = predictor.preprocess(np.stack([f.image for f in frames]))
    return keyframe, inputs, inspect_clip(predictor.model, inputs)


def select_actors(inspection: ClipInspection, actor: int = 0, actors_above: Optional[float] = None) -> List[int]:
    """Proposal indices whose decoder attention to show: every actor with person score >=
    ``actors_above`` (the paper's Fig. 12 averages them), else the ``actor``-th most confident.

    Raises:
        ActorSelectionError: no actor above the threshold, or ``actor`` out of range (the message
            names the command-line option).
    """
    order = np.argsort(-inspection.person_scores, kind="stable")
    if actors_above is not None:
        actors = [int(i) for i in order if inspection.person_scores[i] >= actors_above]
        if not actors:
            raise ActorSelectionError(
                f"no actor has person score >= {actors_above} (highest {inspection.person_scores.max():.3f})"
            )
        return actors
    if not 0 <= actor < len(order):
        raise ActorSelectionError(f"--actor must be in [0, {len(order)})")
    return [int(order[actor])]


def _save(image: Image.Image, output_dir: str, name: str, scale: int) -> str:
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    path = os.path.join(output_dir, name)
    image.save(path)
    return path


def write_pruning_pictures(
    predictor,
    path: str,
    output_dir: str,
    *,
    time: Optional[float] = None,
    actor: int = 0,
    actors_above: Optional[float] = None,
    scale: int = 1,
) -> Dict[str, str]:
    """Write ``pruning.png`` and ``decoder_attention.png`` for the keyframe at ``time`` of ``path``.

    ``pruning.png``: one row per pruning block, one column per tubelet (its first frame), dropped
    tokens greyed out (not written when no block prunes). ``decoder_attention.png``: the frames
    with the actors' boxes on the keyframe, and the last decoder layer's attention of the actors
    (:func:`select_actors`) over the surviving tokens (not written without a decoder). Pictures
    are enlarged ``scale`` times (nearest neighbour).

    Returns:
        ``{"pruning": path, "decoder_attention": path}`` of the pictures written.

    Raises:
        VideoReadError: the video cannot be read at ``time``.
        ActorSelectionError: from :func:`select_actors`.
    """
    keyframe, inputs, inspection = inspect_video_clip(predictor, path, time)
    os.makedirs(output_dir, exist_ok=True)
    counts = ", ".join(f"block {b + 1}: {int(m.sum())}" for b, m in sorted(inspection.kept.items()))
    total = int(np.prod(inspection.grid))
    logger.info(f"keyframe {keyframe.index} at {keyframe.time:.3f} s; grid {inspection.grid} = {total} tokens; kept {counts}")
    written = {}
    if inspection.kept:
        written["pruning"] = _save(render_pruning_grid(inputs["clip"], inspection), output_dir, "pruning.png", scale)
        logger.info(f"wrote {written['pruning']}")
    else:
        logger.warning("no block prunes (all keep rates are 1): pruning.png not written")
    if inspection.decoder_attention is None:
        logger.warning("the action head has no decoder: decoder_attention.png not written")
        return written
    actors = select_actors(inspection, actor, actors_above)
    desc = ", ".join(
        f"#{a} (person {inspection.person_scores[a]:.2f}, box {np.round(inspection.proposal_boxes[a], 1).tolist()})"
        for a in actors
    )
    logger.info(f"decoder attention of actor(s) {desc}")
    image = render_decoder_attention(inputs["clip"], inspection, actors)
    written["decoder_attention"] = _save(image, output_dir, "decoder_attention.png", scale)
    logger.info(f"wrote {written['decoder_attention']}")
    return written
