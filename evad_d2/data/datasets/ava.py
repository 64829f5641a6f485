"""AVA-format datasets (AVA v2.1/v2.2 and the bundled generated dataset).

Layout under a dataset root (datasets/README.md has the details)::

    annotations/ava_{split}_v{version}.csv                     ground truth (one row per person x action)
    annotations/ava_action_list_v{version}.pbtxt               the model's classes (80 for AVA)
    annotations/ava_action_list_v{version}_for_activitynet_*.pbtxt   evaluated subset (60 for AVA)
    annotations/ava_{split}_excluded_timestamps_v{version}.csv optional
    annotations/ava_{split}_predicted_boxes.csv                optional person proposals (score column;
                                                               PySlowFast's and mmaction2's files: .ava_layout)
    videos/<video_id>.<ext>                                    frame_source="video"
    frames/<video_id>/<video_id>_000001.jpg                    frame_source="frames" (or mmaction2's
                                                               rawframes/<video_id>/img_00001.jpg)

One dataset dict per annotated keyframe (excluded timestamps dropped)::

    video_id, timestamp, height, width       as in common dataset dicts
    frame_index     0-based keyframe index on the 30 fps timeline: (timestamp - 900) * 30
    num_frames      frames of the video on that timeline (clips repeat the edge frames past it)
    frame_rate      30
    video_path                               (video source) or
    frame_dir, frame_pattern                 (frames source; pattern has one {} for the 1-based number)
    annotations     [{"bbox", "bbox_mode", "action_ids", "person_id"}], one per person
    proposals       {"boxes": (K, 4) float32 abs XYXY, "scores": (K,)}, only with a proposal file
"""
import functools
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional

import numpy as np
from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode
from PIL import Image

from ..bad_samples import current_load_skips
from ..formats.ava import AvaFormatError, iter_ava_rows, read_exclusions
from ..formats.label_map import read_label_map
from ..formats.proposals import read_proposals
from ..video import VideoReadError, count_frames_in_folder, keyframe_frame_index, probe_video, timeline_frame_count
from .ava_layout import (
    ava_files,
    detect_frame_pattern,
    find_frame_folder,
    index_video_files,
    parse_frame_pattern,
    resolve_frame_source,
)
from .metadata import fresh_metadata

__all__ = ["VideoTimeline", "load_ava_dataset", "register_ava"]

logger = logging.getLogger(__name__)

AVA_FRAME_RATE = 30
AVA_VIDEO_START_SEC = 900
_GENERATOR_HINT = "python datasets/generate_ava_like.py --out {root}"


def _missing(path: str, root: str, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{what} {path} not found. If this root is meant for the bundled generated dataset, run "
        f"`{_GENERATOR_HINT.format(root=root)}`; for AVA/UCF101-24/JHMDB see datasets/README.md."
    )


class VideoTimeline:
    """Size and frame count of one video on the 30 fps timeline (``video_id -> dict``).

    Args:
        source: "video" or "frames".
        root: the dataset root (videos are ``root/videos/<video_id>.<ext>``).
        frame_rate: the timeline's rate (30 for AVA).
        frames_dir: the folder of per-video frame folders (default ``root/frames``, else
            ``root/rawframes``: see :func:`.ava_layout.find_frame_folder`).
        frame_pattern: the frame file pattern (:func:`.ava_layout.parse_frame_pattern`); None:
            AVA's ``<vid>_000001.jpg`` or mmaction2's ``img_00001.jpg``, found per video.
    """

    def __init__(self, source: str, root: str, frame_rate: int = AVA_FRAME_RATE, *,
                 frames_dir: Optional[str] = None, frame_pattern: Optional[str] = None):
        self.source, self.root, self.frame_rate = source, root, frame_rate
        self.video_index = index_video_files(os.path.join(root, "videos")) if source == "video" else {}
        self.frames_dir = find_frame_folder(root) if frames_dir is None else frames_dir
        self.frame_pattern = frame_pattern

    def __call__(self, video_id: str) -> dict:
        """``{"video_path" | "frame_dir" + "frame_pattern", "height", "width", "num_frames"}``.

        Raises:
            VideoReadError: a missing or unreadable video, frame folder or first frame.
        """
        if self.source == "video":
            path = self.video_index.get(video_id)
            if path is None:
                raise VideoReadError(os.path.join(self.root, "videos", f"{video_id}.mp4"), "video file not found")
            info = probe_video(path)
            n = timeline_frame_count(info, self.frame_rate)
            return {"video_path": path, "height": info.height, "width": info.width, "num_frames": n}
        frame_dir = os.path.join(self.frames_dir, video_id)
        pattern = detect_frame_pattern(frame_dir, video_id, self.frame_pattern)
        n = count_frames_in_folder(frame_dir, pattern)
        first = os.path.join(frame_dir, pattern.format(1))
        try:
            with Image.open(first) as img:
                width, height = img.size
        except OSError as e:
            raise VideoReadError(first, f"cannot read frame image: {e}") from None
        return {"frame_dir": frame_dir, "frame_pattern": pattern, "height": height, "width": width, "num_frames": n}


def load_ava_dataset(
    root: str,
    split: str,
    version: str = "2.2",
    frame_source: str = "auto",
    *,
    proposal_file: Optional[str] = None,
    frame_folder: Optional[str] = None,
    frame_pattern: Optional[str] = None,
    frame_rate: int = AVA_FRAME_RATE,
    video_start_sec: float = AVA_VIDEO_START_SEC,
    skip_bad_videos: Optional[bool] = None,
) -> List[dict]:
    """Read one AVA split into dataset dicts (see the module docstring for their fields).

    Args:
        root: dataset root (AVA layout; PySlowFast's and mmaction2's both read, see
            :mod:`.ava_layout`).
        split: "train" or "val".
        version: "2.1" or "2.2" (selects the file names).
        frame_source: "video", "frames" or "auto" (videos/ if present, else frame folders).
        proposal_file: person boxes to attach as "proposals": a CSV or mmaction2's ``.pkl``
            (:func:`evad_d2.data.formats.proposals.read_proposals`); defaults to the first
            existing of ``annotations/ava_{split}_predicted_boxes.csv``,
            ``annotations/person_box_67091280_iou90/ava_detection_{split}_boxes_and_labels*.csv``,
            ``annotations/ava_dense_proposals_{split}.FAIR.recall_*.pkl``.
        frame_folder: the frames folder under ``root`` (default ``frames``, else ``rawframes``).
        frame_pattern: frame file names, e.g. ``"img_%05d.jpg"`` or ``"{video_id}_{:06d}.jpg"``
            (1-based numbers); default: AVA's or mmaction2's, whichever each folder has.
        frame_rate, video_start_sec: the timeline: timestamp t is frame (t - start) * rate. AVA's
            15-minute cut clips start at second 900; use 0 for uncut movies.
        skip_bad_videos: drop, log and count the keyframes of videos that are missing or do not
            open, of frame folders that are missing or have gaps, and keyframes outside their
            video, instead of raising. None (what registered datasets pass): skip only inside
            ``evad_d2.data.bad_samples.skip_bad_samples_at_load`` (``DATASETS.AVA.SKIP_BAD_SAMPLES``
            in training), which also records the drops.

    Raises:
        FileNotFoundError: missing annotation files (with how to get them).
        AvaFormatError: malformed CSV/label map rows or proposals, an annotation CSV without rows,
            or a timestamp outside its video (file:line).
        VideoReadError: a missing or unreadable video/frame folder (naming the file and the CSV line).
        ValueError: a bad ``frame_pattern``.
        RuntimeError: skipping, and every keyframe was bad.
    """
    load_skips = current_load_skips()
    if skip_bad_videos is None:
        skip_bad_videos = load_skips is not None
    files = _existing_annotation_files(root, split, version)
    source = resolve_frame_source(root, frame_source)
    if frame_pattern is not None:
        parse_frame_pattern(frame_pattern)
    label_map = read_label_map(files["label_map"])
    excluded = read_exclusions(files["exclusions"]) if os.path.isfile(files["exclusions"]) else set()
    gt_path = files["groundtruth"]
    keyframes = _ground_truth_keyframes(gt_path, label_map)
    if proposal_file is None and os.path.isfile(files["proposals"]):
        proposal_file = files["proposals"]
    proposals = None if proposal_file is None else read_proposals(proposal_file)
    frames_dir = None if frame_folder is None else os.path.join(root, frame_folder)
    timeline = VideoTimeline(source, root, frame_rate, frames_dir=frames_dir, frame_pattern=frame_pattern)
    reader = _KeyframeReader(gt_path, timeline, frame_rate, video_start_sec, skip_bad_videos)
    dicts = _keyframe_records(reader, keyframes, excluded, proposals)
    skipped, videos = reader.skipped, reader.videos
    if load_skips is not None:
        load_skips.add(skipped)
    if not dicts and skipped:
        raise RuntimeError(
            f"every one of the {skipped} keyframes of {gt_path} was skipped as bad (SKIP_BAD_SAMPLES); "
            "nothing is left to train on. The warnings before this name each video and error; check the data "
            f"with `python -m evad_d2.data.validate --dataset-root {root}`."
        )
    n_excluded = sum(1 for k in keyframes if k in excluded)
    logger.info(
        f"Loaded {len(dicts)} keyframes of {len(videos)} videos from {gt_path} ({source}); "
        f"{n_excluded} excluded timestamps dropped" + (f", {skipped} keyframes skipped as bad" if skipped else "")
    )
    return dicts


def _keyframe_records(reader: "_KeyframeReader", keyframes, excluded, proposals) -> List[dict]:
    """The dataset dicts of the keyframes not excluded (proposals attached where given)."""
    dicts = []
    for (video_id, ts), rows in keyframes.items():
        if (video_id, ts) in excluded:
            continue
        record = reader.record(video_id, ts, rows)
        if record is None:
            continue
        if proposals is not None:
            record["proposals"] = _proposal_arrays(proposals.get((video_id, ts)), record["width"], record["height"])
        dicts.append(record)
    return dicts


def _existing_annotation_files(root: str, split: str, version: str) -> Dict[str, Optional[str]]:
    """:func:`ava_files`, the ground truth and label map checked to exist (else how to get them)."""
    files = ava_files(root, split, version)
    for key in ("groundtruth", "label_map"):
        if not os.path.isfile(files[key]):
            raise _missing(files[key], root, "AVA annotation file")
    return files


def _rows_by_keyframe(rows) -> "OrderedDict[tuple, list]":
    """CSV rows grouped by (video id, timestamp), keyframes and rows in file order."""
    keyframes: "OrderedDict[tuple, list]" = OrderedDict()
    for row in rows:
        keyframes.setdefault((row.video_id, row.timestamp), []).append(row)
    return keyframes


def _ground_truth_keyframes(gt_path: str, label_map: Dict[int, str]) -> "OrderedDict[tuple, list]":
    """The annotation CSV's rows by keyframe; an error naming the file if it has none."""
    keyframes = _rows_by_keyframe(iter_ava_rows(gt_path, label_map=label_map))
    if not keyframes:
        raise AvaFormatError(
            gt_path, None, "the annotation CSV has no rows (empty file); it needs "
            "'video_id,timestamp,x1,y1,x2,y2,action_id,person_id' rows (datasets/README.md)"
        )
    return keyframes


class _KeyframeReader:
    """Dataset dicts of the ground truth's keyframes, each video opened once.

    A video that does not open, or a keyframe outside its video, raises an error naming the CSV
    line; with ``skip`` it is logged and counted in :attr:`skipped` instead, and gives None.
    """

    def __init__(self, gt_path: str, timeline: VideoTimeline, frame_rate: int, video_start_sec: float, skip: bool):
        self.gt_path, self.timeline, self.skip = gt_path, timeline, skip
        self.frame_rate, self.video_start_sec = frame_rate, video_start_sec
        self.videos: Dict[str, Optional[dict]] = {}  # video id -> timeline entry, None if it did not open
        self.skipped = 0

    def record(self, video_id: str, ts: int, rows: list) -> Optional[dict]:
        """The keyframe's dataset dict without proposals (see :func:`_keyframe_record`), or None."""
        line = rows[0].line
        if video_id not in self.videos:
            self.videos[video_id] = self._open(video_id, line)
        video = self.videos[video_id]
        if video is None:
            self.skipped += 1
            return None
        frame_index = keyframe_frame_index(ts, frame_rate=self.frame_rate, start_sec=self.video_start_sec)
        if not 0 <= frame_index < video["num_frames"]:
            msg = (
                f"timestamp {ts} is frame {frame_index} (= ({ts} - {self.video_start_sec:g}) * {self.frame_rate}), "
                f"outside video {video_id} with {video['num_frames']} frames"
            )
            error = AvaFormatError(self.gt_path, line, msg)
            self._skip_or_raise(error, f"Skipping keyframe {self.gt_path}:{line}: {msg}")
            self.skipped += 1
            return None
        return _keyframe_record(video_id, ts, rows, video, frame_index, self.frame_rate)

    def _open(self, video_id: str, line: int) -> Optional[dict]:
        try:
            return self.timeline(video_id)
        except VideoReadError as e:
            where = f"{self.gt_path}:{line}"
            error = VideoReadError(e.path, f"{e.reason} (video of {where})")
            self._skip_or_raise(error, f"Skipping the keyframes of video {video_id} (first at {where}): {e}")
        return None

    def _skip_or_raise(self, error: Exception, warning: str) -> None:
        if not self.skip:
            raise error from None
        logger.warning(warning)


def _keyframe_record(video_id: str, ts: int, rows: list, video: dict, frame_index: int, frame_rate: int) -> dict:
    """The dataset dict of one keyframe (fields in the module docstring) without proposals; one
    annotation per person: rows of one person share the box, several rows are several labels."""
    w, h = video["width"], video["height"]
    persons: "OrderedDict[tuple, dict]" = OrderedDict()
    for r in rows:
        pid = int(r.person_id) if r.person_id is not None else -1
        ann = persons.setdefault((r.box, pid), {
            "bbox": [r.box[0] * w, r.box[1] * h, r.box[2] * w, r.box[3] * h],
            "bbox_mode": BoxMode.XYXY_ABS,
            "action_ids": [],
            "person_id": pid,
        })
        if r.action_id not in ann["action_ids"]:
            ann["action_ids"].append(r.action_id)
    record = {
        "video_id": video_id,
        "timestamp": ts,
        "height": h,
        "width": w,
        "frame_index": frame_index,
        "num_frames": video["num_frames"],
        "frame_rate": frame_rate,
        "annotations": list(persons.values()),
    }
    record.update({k: video[k] for k in ("video_path", "frame_dir", "frame_pattern") if k in video})
    return record


def _proposal_arrays(proposals, width: int, height: int) -> Dict[str, np.ndarray]:
    """``{"boxes": (K, 4) float32 pixels XYXY, "scores": (K,) float32}`` of a keyframe's proposals
    (normalised boxes and scores from :func:`read_proposals`, or None: none)."""
    boxes, scores = proposals if proposals is not None else (np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    scale = np.array([width, height, width, height], dtype=np.float32)
    return {"boxes": boxes.reshape(-1, 4) * scale, "scores": scores.astype(np.float32)}


_AVA_LAZY_KEYS = ("action_ids", "action_classes", "eval_action_ids", "eval_label_map_file", "exclusions_file")


def _ava_label_metadata(name: str, root: str, files: Dict[str, str]) -> dict:
    if not os.path.isfile(files["label_map"]):
        raise AttributeError(
            f"dataset '{name}': label map {files['label_map']} not found, so its classes are unknown. "
            f"If this root is meant for the bundled generated dataset, run `{_GENERATOR_HINT.format(root=root)}`; "
            "for AVA see datasets/README.md."
        )
    label_map = read_label_map(files["label_map"])
    ids = sorted(label_map)
    eval_map_file = files["eval_label_map"] if os.path.isfile(files["eval_label_map"]) else None
    eval_ids = sorted(read_label_map(eval_map_file)) if eval_map_file else ids
    unknown = sorted(set(eval_ids) - set(ids))
    if unknown:
        raise AvaFormatError(eval_map_file, None, f"evaluated class ids {unknown} are not in {files['label_map']}")
    return {
        "action_ids": ids,
        "action_classes": [label_map[i] for i in ids],
        "eval_action_ids": eval_ids,
        "eval_label_map_file": eval_map_file,
        "exclusions_file": files["exclusions"] if os.path.isfile(files["exclusions"]) else None,
    }


def register_ava(name: str, root: str, split: str, version: str = "2.2", frame_source: str = "auto", **kwargs):
    """Register an AVA-format split as ``name``; nothing is read until it is used.

    Args:
        name: dataset name, e.g. "ava_v2.2_train".
        root, split, version, frame_source, kwargs: as in ``load_ava_dataset``: e.g.
            ``proposal_file=".../ava_dense_proposals_val.FAIR.recall_93.9.pkl"`` (mmaction2's pickle
            or a CSV), ``frame_folder="rawframes"``, ``frame_pattern="img_%05d.jpg"``,
            ``video_start_sec=0``.

    Metadata: ``action_ids`` (label-map ids in model column order, i.e. sorted), ``action_classes``,
    ``eval_action_ids`` (from the ``_for_activitynet`` label map if present, else all),
    ``label_map_file``, ``eval_label_map_file``, ``groundtruth_file``, ``exclusions_file`` (or None),
    ``evaluator_type="ava"``, ``frame_rate``, ``video_start_sec``, ``dataset_root``, ``split``,
    ``version``. The label-map fields are read on first access.
    """
    DatasetCatalog.register(name, lambda: load_ava_dataset(root, split, version, frame_source, **kwargs))
    files = ava_files(root, split, version)
    meta = fresh_metadata(name).set_lazy(_AVA_LAZY_KEYS, functools.partial(_ava_label_metadata, name, root, files))
    meta.set(
        label_map_file=files["label_map"],
        groundtruth_file=files["groundtruth"],
        evaluator_type="ava",
        frame_rate=kwargs.get("frame_rate", AVA_FRAME_RATE),
        video_start_sec=kwargs.get("video_start_sec", AVA_VIDEO_START_SEC),
        dataset_root=root,
        split=split,
        version=version,
    )
