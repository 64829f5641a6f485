"""AVA-format datasets (AVA v2.1/v2.2 and the bundled generated dataset).

Layout under a dataset root (datasets/README.md has the details)::

    annotations/ava_{split}_v{version}.csv                     ground truth (one row per person x action)
    annotations/ava_action_list_v{version}.pbtxt               the model's classes (80 for AVA)
    annotations/ava_action_list_v{version}_for_activitynet_*.pbtxt   evaluated subset (60 for AVA)
    annotations/ava_{split}_excluded_timestamps_v{version}.csv optional
    annotations/ava_{split}_predicted_boxes.csv                optional person proposals (score column)
    videos/<video_id>.<ext>                                    frame_source="video"
    frames/<video_id>/<video_id>_000001.jpg                    frame_source="frames"

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
import glob
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
from ..video import VideoReadError, count_frames_in_folder, keyframe_frame_index, probe_video, timeline_frame_count
from .metadata import fresh_metadata

__all__ = ["ava_files", "load_ava_dataset", "register_ava"]

logger = logging.getLogger(__name__)

AVA_FRAME_RATE = 30
AVA_VIDEO_START_SEC = 900
# The evaluated-subset label map is named after the ActivityNet challenge year of its release.
_EVAL_LABEL_MAP_YEAR = {"2.1": 2018, "2.2": 2019}
_GENERATOR_HINT = "python datasets/generate_ava_like.py --out {root}"


def ava_files(root: str, split: str, version: str) -> Dict[str, Optional[str]]:
    """Standard paths of a split's annotation files (they need not exist).

    Returns:
        dict with "groundtruth", "label_map", "eval_label_map", "exclusions", "proposals",
        "frame_list". "eval_label_map" falls back to any ``..._for_activitynet_*.pbtxt``.
    """
    ann = os.path.join(root, "annotations")
    eval_map = os.path.join(ann, f"ava_action_list_v{version}_for_activitynet_{_EVAL_LABEL_MAP_YEAR.get(version, 0)}.pbtxt")
    if not os.path.isfile(eval_map):
        found = sorted(glob.glob(os.path.join(ann, f"ava_action_list_v{version}_for_activitynet_*.pbtxt")))
        eval_map = found[0] if found else eval_map
    return {
        "groundtruth": os.path.join(ann, f"ava_{split}_v{version}.csv"),
        "label_map": os.path.join(ann, f"ava_action_list_v{version}.pbtxt"),
        "eval_label_map": eval_map,
        "exclusions": os.path.join(ann, f"ava_{split}_excluded_timestamps_v{version}.csv"),
        "proposals": os.path.join(ann, f"ava_{split}_predicted_boxes.csv"),
        "frame_list": os.path.join(root, "frame_lists", f"{split}.csv"),
    }


def _missing(path: str, root: str, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{what} {path} not found. If this root is meant for the bundled generated dataset, run "
        f"`{_GENERATOR_HINT.format(root=root)}`; for AVA/UCF101-24/JHMDB see datasets/README.md."
    )


def resolve_frame_source(root: str, frame_source: str) -> str:
    """``"video"`` or ``"frames"``; ``"auto"`` picks videos/ if present, else frames/."""
    if frame_source in ("video", "frames"):
        return frame_source
    if frame_source != "auto":
        raise ValueError(f"frame_source must be 'video', 'frames' or 'auto', got {frame_source!r}")
    if os.path.isdir(os.path.join(root, "videos")):
        return "video"
    if os.path.isdir(os.path.join(root, "frames")):
        return "frames"
    raise _missing(os.path.join(root, "videos"), root, "neither videos/ nor frames/ folder:")


def index_video_files(video_dir: str) -> Dict[str, str]:
    """Map each video id (file name without extension) in ``video_dir`` to its path."""
    if not os.path.isdir(video_dir):
        return {}
    index = {}
    for name in sorted(os.listdir(video_dir)):
        stem, ext = os.path.splitext(name)
        # An .mp4 wins over other containers of the same id (e.g. a partial .webm download).
        if ext and (stem not in index or ext == ".mp4"):
            index[stem] = os.path.join(video_dir, name)
    return index


class _VideoTimeline:
    """Size and frame count of one video on the 30 fps timeline, read once per video."""

    def __init__(self, source, root, video_index, frame_rate):
        self.source, self.root, self.video_index, self.frame_rate = source, root, video_index, frame_rate

    def __call__(self, video_id: str) -> dict:
        if self.source == "video":
            path = self.video_index.get(video_id)
            if path is None:
                raise VideoReadError(os.path.join(self.root, "videos", f"{video_id}.mp4"), "video file not found")
            info = probe_video(path)
            n = timeline_frame_count(info, self.frame_rate)
            return {"video_path": path, "height": info.height, "width": info.width, "num_frames": n}
        frame_dir = os.path.join(self.root, "frames", video_id)
        pattern = video_id + "_{:06d}.jpg"
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
    frame_rate: int = AVA_FRAME_RATE,
    video_start_sec: float = AVA_VIDEO_START_SEC,
    skip_bad_videos: Optional[bool] = None,
) -> List[dict]:
    """Read one AVA split into dataset dicts (see the module docstring for their fields).

    Args:
        root: dataset root (AVA layout).
        split: "train" or "val".
        version: "2.1" or "2.2" (selects the file names).
        frame_source: "video", "frames" or "auto".
        proposal_file: person-box CSV to attach as "proposals"; defaults to
            ``annotations/ava_{split}_predicted_boxes.csv`` when that exists.
        frame_rate, video_start_sec: the timeline: timestamp t is frame (t - start) * rate. AVA's
            15-minute cut clips start at second 900; use 0 for uncut movies.
        skip_bad_videos: drop, log and count the keyframes of videos that are missing or do not
            open, of frame folders that are missing or have gaps, and keyframes outside their
            video, instead of raising. None (what registered datasets pass): skip only inside
            ``evad_d2.data.bad_samples.skip_bad_samples_at_load`` (``DATASETS.AVA.SKIP_BAD_SAMPLES``
            in training), which also records the drops.

    Raises:
        FileNotFoundError: missing annotation files (with how to get them).
        AvaFormatError: malformed CSV/label map rows, an annotation CSV without rows, or a
            timestamp outside its video (file:line).
        VideoReadError: a missing or unreadable video/frame folder (naming the file and the CSV line).
        RuntimeError: skipping, and every keyframe was bad.
    """
    load_skips = current_load_skips()
    if skip_bad_videos is None:
        skip_bad_videos = load_skips is not None
    files = _existing_annotation_files(root, split, version)
    source = resolve_frame_source(root, frame_source)
    label_map = read_label_map(files["label_map"])
    excluded = read_exclusions(files["exclusions"]) if os.path.isfile(files["exclusions"]) else set()
    gt_path = files["groundtruth"]
    keyframes = _ground_truth_keyframes(gt_path, label_map)
    n_excluded = sum(1 for k in keyframes if k in excluded)
    if proposal_file is None and os.path.isfile(files["proposals"]):
        proposal_file = files["proposals"]
    proposals = None if proposal_file is None else _rows_by_keyframe(iter_ava_rows(proposal_file, policy="proposals"))

    timeline = _VideoTimeline(source, root, index_video_files(os.path.join(root, "videos")), frame_rate)
    reader = _KeyframeReader(gt_path, timeline, frame_rate, video_start_sec, skip_bad_videos)
    dicts = []
    for (video_id, ts), rows in keyframes.items():
        if (video_id, ts) in excluded:
            continue
        record = reader.record(video_id, ts, rows)
        if record is None:
            continue
        if proposals is not None:
            record["proposals"] = _proposal_arrays(proposals.get((video_id, ts), []), record["width"], record["height"])
        dicts.append(record)
    skipped, videos = reader.skipped, reader.videos
    if load_skips is not None:
        load_skips.add(skipped)
    if not dicts and skipped:
        raise RuntimeError(
            f"every one of the {skipped} keyframes of {gt_path} was skipped as bad (SKIP_BAD_SAMPLES); "
            "nothing is left to train on. The warnings before this name each video and error; check the data "
            f"with `python -m evad_d2.data.validate --dataset-root {root}`."
        )
    logger.info(
        f"Loaded {len(dicts)} keyframes of {len(videos)} videos from {gt_path} ({source}); "
        f"{n_excluded} excluded timestamps dropped" + (f", {skipped} keyframes skipped as bad" if skipped else "")
    )
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

    def __init__(self, gt_path: str, timeline: "_VideoTimeline", frame_rate: int, video_start_sec: float, skip: bool):
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


def _proposal_arrays(rows: list, width: int, height: int) -> Dict[str, np.ndarray]:
    """``{"boxes": (K, 4) float32 pixels XYXY, "scores": (K,) float32}`` of a keyframe's proposal
    rows (a row without a score scores 1)."""
    scale = np.array([width, height, width, height], dtype=np.float32)
    return {
        "boxes": np.array([p.box for p in rows], dtype=np.float32).reshape(-1, 4) * scale,
        "scores": np.array([p.score if p.score is not None else 1.0 for p in rows], dtype=np.float32),
    }


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
        root, split, version, frame_source, kwargs: as in ``load_ava_dataset``.

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
