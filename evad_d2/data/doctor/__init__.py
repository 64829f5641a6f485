"""Why is my mAP zero? The usual causes, checked on an AVA-format root and explained.

    python -m evad_d2.data.validate --dataset-root DIR --explain [--num-classes N | --config-file F]
        [--detections OUTPUT_DIR/inference/ava_detections.csv]

Each check reads the files as written (tolerantly: a row the loader would reject is still looked
at) and reports ``ok``, ``note`` or ``PROBLEM`` with what it saw, why it matters and the fix:

==============  =========================================================================
check           a PROBLEM when
==============  =========================================================================
class ids       an action id is not in the model's label map (0-based or shifted ids named)
class count     the label map is AVA's 60-class evaluation list, or the model predicts
                another number of classes than the label map has
timestamps      timestamps below 900 (no +900 offset) or not whole seconds
exclusions      most annotated keyframes are excluded, or exclusions match no keyframe
                because their time offset differs
frame naming    frame folders whose names neither AVA's nor mmaction2's pattern matches
                (0-based numbering, other digits or extension: the pattern to pass is named)
frame rate      frames extracted at the video's own rate instead of 30 fps
box units       boxes in pixels, or (x, y, width, height) instead of corners
detections      (with a detections CSV) class ids outside the label map / evaluated
                classes, or no detection on a ground-truth keyframe
==============  =========================================================================
"""
import os
from typing import Dict, List, Optional, TextIO, Tuple

from ..datasets.ava import VideoTimeline
from ..datasets.ava_layout import ava_files, find_frame_folder, index_video_files, resolve_frame_source
from ..formats.ava import AvaFormatError
from ..formats.label_map import read_label_map
from ..video import VideoInfo, VideoReadError, probe_video
from .annotations import (
    check_box_units,
    check_class_count,
    check_class_ids,
    check_detections,
    check_exclusions,
    check_timestamps,
)
from .findings import Finding, RawRow, read_raw_rows
from .frames import check_frame_naming, check_frame_rate

__all__ = ["Finding", "diagnose", "print_findings"]


def _label_maps(files: dict) -> Tuple[Optional[Dict[int, str]], Optional[List[int]], List[Finding]]:
    """(model label map, evaluated ids, findings about unreadable maps)."""
    try:
        label_map = read_label_map(files["label_map"])
    except (AvaFormatError, OSError) as e:
        return None, None, [Finding("class ids", "problem", f"the label map cannot be read: {e}",
                                    "fix the label map first (python -m evad_d2.data.validate names the line)")]
    try:
        eval_ids = sorted(read_label_map(files["eval_label_map"])) if os.path.isfile(files["eval_label_map"]) else None
    except AvaFormatError:
        eval_ids = None
    return label_map, eval_ids, []


def _videos(root: str, video_ids: List[str]) -> Dict[str, VideoInfo]:
    index = index_video_files(os.path.join(root, "videos"))
    infos = {}
    for v in video_ids:
        if v in index:
            try:
                infos[v] = probe_video(index[v])
            except VideoReadError:
                pass  # the validator reports unreadable videos
    return infos


def _sizes(root: str, video_ids: List[str], videos: Dict[str, VideoInfo], frames_dir: Optional[str],
           frame_pattern: Optional[str]) -> Dict[str, Tuple[int, int]]:
    sizes = {v: (info.width, info.height) for v, info in videos.items()}
    if frames_dir is not None:
        timeline = VideoTimeline("frames", root, frames_dir=frames_dir, frame_pattern=frame_pattern)
        for v in video_ids:
            if v not in sizes:
                try:
                    entry = timeline(v)
                    sizes[v] = (entry["width"], entry["height"])
                except (VideoReadError, ValueError):
                    pass
    return sizes


def _frame_findings(root, source, video_ids, rows, frame_folder, frame_pattern) -> Tuple[List[Finding], dict]:
    """Frame naming and frame rate findings, and the frame sizes by video."""
    videos = _videos(root, video_ids)
    frames_dir = find_frame_folder(root, frame_folder)
    frames_dir = frames_dir if os.path.isdir(frames_dir) else None
    findings = []
    if source == "frames" and frames_dir is not None:
        findings += check_frame_naming(frames_dir, video_ids, frame_pattern)
    last = {}
    for r in (r for rs in rows.values() for r in rs if r.timestamp is not None):
        last[r.video_id] = max(last.get(r.video_id, r.timestamp), r.timestamp)
    findings += check_frame_rate(frames_dir, videos, last)
    return findings, _sizes(root, video_ids, videos, frames_dir, frame_pattern)


def diagnose(
    root: str,
    *,
    version: str = "2.2",
    frame_source: str = "auto",
    num_classes: Optional[int] = None,
    frame_folder: Optional[str] = None,
    frame_pattern: Optional[str] = None,
    detections: Optional[str] = None,
) -> List[Finding]:
    """Run every check (see the module docstring) on the AVA-format root ``root``.

    Args:
        root, version, frame_source, frame_folder, frame_pattern: as for ``load_ava_dataset``.
        num_classes: what the model predicts (``MODEL.EVAD.NUM_ACTION_CLASSES``), if known.
        detections: a detections CSV (the evaluator's ``ava_detections.csv``) to check too,
            against the val split (else the train split).

    Returns:
        the findings, check by check.
    """
    files = {s: ava_files(root, s, version) for s in ("train", "val")}
    gt = {s: f["groundtruth"] for s, f in files.items() if os.path.isfile(f["groundtruth"])}
    if not gt:
        return [Finding("files", "problem", f"no annotation CSV ({files['train']['groundtruth']} or the val one)",
                        "see datasets/README.md for the layout (tools/convert_cvat.py writes it from CVAT exports)")]
    rows: Dict[str, List[RawRow]] = {path: read_raw_rows(path) for path in gt.values()}
    label_map, eval_ids, findings = _label_maps(files["train"])
    if label_map is not None:
        findings += check_class_ids(label_map, files["train"]["label_map"], rows, gt.get("train"))
        findings += check_class_count(label_map, files["train"]["label_map"], eval_ids, num_classes)
    findings += check_timestamps(rows)
    findings += check_exclusions(rows, {f["exclusions"]: gt[s] for s, f in files.items()
                                        if s in gt and os.path.isfile(f["exclusions"])})
    video_ids = list(dict.fromkeys(r.video_id for rs in rows.values() for r in rs))
    try:
        source = resolve_frame_source(root, frame_source)
    except FileNotFoundError as e:
        findings.append(Finding("frame naming", "problem", str(e), "put the videos in videos/ or frames in frames/"))
        source = None
    sizes = {}
    if source is not None:
        frame_findings, sizes = _frame_findings(root, source, video_ids, rows, frame_folder, frame_pattern)
        findings += frame_findings
    findings += check_box_units(rows, sizes)
    if detections is not None and label_map is not None:
        findings += check_detections(detections, label_map, eval_ids, rows[gt.get("val", gt.get("train"))])
    return findings


def print_findings(findings: List[Finding], out: TextIO) -> int:
    """Print the findings (problems with their fix); returns the number of problems."""
    width = max([len(f.check) for f in findings] + [5])
    for f in findings:
        tag = {"ok": "ok", "note": "note", "problem": "PROBLEM"}[f.status]
        print(f"[{tag:7s}] {f.check:{width}s}  {f.message}", file=out)
        if f.fix:
            print(f"{'':9} {'':{width}s}  fix: {f.fix}", file=out)
    problems = sum(f.status == "problem" for f in findings)
    print(f"{problems} likely cause(s) of a zero mAP found" if problems else "no known cause of a zero mAP found", file=out)
    return problems
