"""UCF101-24 and JHMDB-21 from the pickled ground truth of the action-detection literature.

Ground truth is the ACT pickle (``UCF101v2-GT.pkl`` / ``JHMDB-GT.pkl``; layout and reader in
:mod:`evad_d2.data.formats.ucf_jhmdb`).

Frames are images on disk: ``<root>/<frames_dirname>/<video>/00001.jpg`` (5-digit, 1-based; the
video name includes its class folder, e.g. ``Basketball/v_Basketball_g01_c01``).

Dataset dicts follow the AVA ones (see ``ava.py``): ``video_id`` = the pickle's video name,
``timestamp`` = the 1-based frame number, ``frame_index = timestamp - 1``, ``frame_dir`` and
``frame_pattern``; each tube box of the frame is one annotation with ``action_ids = [class index]``
and ``person_id`` = the tube's index within the video.
"""
import functools
import logging
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode

from ..formats.ucf_jhmdb import load_gt_pickle, split_videos
from .metadata import fresh_metadata

__all__ = ["load_ucf_jhmdb_dataset", "register_ucf_jhmdb"]

logger = logging.getLogger(__name__)


def load_ucf_jhmdb_dataset(
    gt_file: str,
    frame_root: str,
    split: str,
    split_index: int = 0,
    *,
    frame_ext: str = ".jpg",
    all_frames: Optional[bool] = None,
) -> List[dict]:
    """Dataset dicts of one split: one per annotated frame (or per frame with ``all_frames``).

    Args:
        gt_file: the pickle.
        frame_root: folder holding ``<video>/00001<frame_ext>``.
        split: "train" or "test".
        split_index: 0-based split (JHMDB has three; UCF101-24 one).
        frame_ext: ".jpg" (UCF101-24) or ".png" (JHMDB's usual frames).
        all_frames: also make keyframes of frames without boxes (frame-mAP counts false
            positives there). Default: True for "test", False for "train".

    Raises:
        FileNotFoundError: no ``gt_file``.
        ValueError: a malformed or refused pickle, or one without the split
            (:class:`~evad_d2.data.formats.ucf_jhmdb.GTPickleError`), a video of the split missing from nframes/resolution/gttubes, or a tube frame outside
            the video (naming file, video and class).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    gt = load_gt_pickle(gt_file)
    videos = split_videos(gt, split, split_index, source=gt_file)
    if all_frames is None:
        all_frames = split == "test"
    dicts, dropped = [], 0
    for video in videos:
        for key in ("nframes", "resolution", "gttubes"):
            if video not in gt[key]:
                raise ValueError(f"{gt_file}: video {video!r} of {split}_videos[{split_index}] has no entry in '{key}'")
        nframes = int(gt["nframes"][video])
        height, width = (int(v) for v in gt["resolution"][video])
        per_frame, video_dropped = _frame_annotations(gt_file, video, gt["gttubes"][video], nframes, height, width)
        dropped += video_dropped
        for frame in range(1, nframes + 1) if all_frames else sorted(per_frame):
            dicts.append({
                "video_id": video,
                "timestamp": frame,
                "height": height,
                "width": width,
                "frame_index": frame - 1,
                "num_frames": nframes,
                "frame_dir": os.path.join(frame_root, video),
                "frame_pattern": "{:05d}" + frame_ext,
                "annotations": per_frame.get(frame, []),
            })
    if dropped:
        logger.warning(f"{gt_file}: dropped {dropped} tube boxes that are empty after clipping to the frame")
    logger.info(f"Loaded {len(dicts)} keyframes of {len(videos)} videos from {gt_file} ({split}, split {split_index + 1})")
    return dicts


def _frame_annotations(
    gt_file: str, video: str, tubes_by_label: Dict[int, List[np.ndarray]], nframes: int, height: int, width: int
) -> Tuple[Dict[int, List[dict]], int]:
    """The annotations of one video by frame number, and how many boxes were empty after clipping.

    Each tube box is one annotation, clipped to the frame; ``person_id`` numbers the video's tubes
    in label order. The tubes are as :func:`load_gt_pickle` checked them ((n, 5), known labels).

    Raises:
        ValueError: a tube frame outside ``1..nframes`` (naming file, video and class).
    """
    per_frame: Dict[int, List[dict]] = {}
    dropped = 0
    tube_id = 0
    for label, tubes in sorted(tubes_by_label.items()):
        for tube in tubes:
            for row in tube:
                frame = int(row[0])
                if not 1 <= frame <= nframes:
                    raise ValueError(f"{gt_file}: video {video!r} class {label}: tube frame {frame} outside 1..{nframes}")
                x1, y1, x2, y2 = np.clip(row[1:], 0, [width, height, width, height])
                if x2 <= x1 or y2 <= y1:
                    dropped += 1
                    continue
                per_frame.setdefault(frame, []).append({
                    "bbox": [float(x1), float(y1), float(x2), float(y2)],
                    "bbox_mode": BoxMode.XYXY_ABS,
                    "action_ids": [int(label)],
                    "person_id": tube_id,
                })
            tube_id += 1
    return per_frame, dropped


def _ucf_jhmdb_label_metadata(gt_file: str) -> dict:
    try:
        labels = list(load_gt_pickle(gt_file)["labels"])
    except FileNotFoundError as e:
        raise AttributeError(str(e)) from None
    return {"action_classes": labels, "action_ids": list(range(len(labels))), "eval_action_ids": list(range(len(labels)))}


def register_ucf_jhmdb(
    name: str, gt_file: str, frame_root: str, split: str, split_index: int = 0, *,
    frame_ext: str = ".jpg", all_frames: Optional[bool] = None,
):
    """Register a UCF101-24/JHMDB split; the pickle is read when the dataset or its classes are used.

    Metadata: ``evaluator_type="ucf_jhmdb"``, ``gt_file``, ``split``, ``split_index``, and (read on
    first access) ``action_classes``, ``action_ids`` (= class indices 0..C-1), ``eval_action_ids``.
    """
    DatasetCatalog.register(
        name,
        lambda: load_ucf_jhmdb_dataset(gt_file, frame_root, split, split_index, frame_ext=frame_ext, all_frames=all_frames),
    )
    meta = fresh_metadata(name).set_lazy(
        ("action_classes", "action_ids", "eval_action_ids"), functools.partial(_ucf_jhmdb_label_metadata, gt_file)
    )
    meta.set(evaluator_type="ucf_jhmdb", gt_file=gt_file, split=split, split_index=split_index, frame_root=frame_root)
