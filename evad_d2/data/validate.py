"""Check an AVA-format dataset before training and report every problem by file and line.

    python -m evad_d2.data.validate --dataset-root DIR [--frame-source video|frames]
        [--version 2.2] [--decode full|header] [--frame-folder rawframes] [--frame-pattern img_%05d.jpg]
        [--explain [--num-classes N | --config-file CFG] [--detections ava_detections.csv]]

Checks: label maps parse (and the evaluated subset lies inside the model's classes); every CSV
row of the train/val annotations (and proposal files, if any: CSV or mmaction2's ``.pkl``) has
the right columns, numbers, boxes inside [0, 1] and known class ids (and an annotation CSV has
rows); excluded-timestamp files parse; every referenced video (or frame folder: AVA's, PySlowFast's
or mmaction2's names, or ``--frame-pattern``) exists, opens and, with ``--decode full``, decodes
completely up to the length its header declares, read by training's own decoder (frame times from
timestamps, rotation metadata applied: ``evad_d2.data.video``), so a video that passes here
reads in training; every timestamp falls inside its video; frame lists parse and name existing
frames. ``--explain`` then runs the zero-mAP doctor (:mod:`evad_d2.data.doctor`: class ids and
count, timestamps, exclusions, frame naming and rate, box units, and a detections file) and
prints each finding with its fix. Exits 0 when nothing is wrong, 1 otherwise (2 for bad arguments).
"""
import argparse
import os
import sys
from collections import OrderedDict
from typing import Dict, List, Optional

from ..config import get_evad_cfg
from ..utils.safe_pickle import UnsafePickleError
from .datasets.ava import AVA_FRAME_RATE, AVA_VIDEO_START_SEC, VideoTimeline
from .datasets.ava_layout import ava_files, index_video_files
from .datasets.ava_layout import find_frame_folder, parse_frame_pattern, resolve_frame_source
from .doctor import diagnose, print_findings
from .formats.ava import AvaFormatError, iter_ava_rows_or_errors, iter_frame_list, read_exclusions
from .formats.label_map import read_label_map
from .formats.proposals import is_pickle_file, read_proposals
from .video import VideoReadError, keyframe_frame_index, probe_video, scan_video, timeline_frame_count

__all__ = ["validate_ava_root", "main"]


class _Report:
    def __init__(self, out):
        self.problems: List[str] = []
        self.out = out

    def error(self, message: str):
        self.problems.append(message)
        print(f"ERROR {message}", file=self.out)


def _check_videos(root, source, decode, used: "OrderedDict[str, tuple]", report, frames: VideoTimeline) -> Dict[str, dict]:
    """Open (and decode) every referenced video or frame folder; returns its timeline entry
    (``num_frames``, and ``frame_pattern`` for frame folders) per video."""
    entries = {}
    video_index = index_video_files(os.path.join(root, "videos"))
    for video_id, (csv_path, line) in used.items():
        where = f" (video of {csv_path}:{line})"
        try:
            if source == "video":
                path = video_index.get(video_id)
                if path is None:
                    raise VideoReadError(os.path.join(root, "videos", f"{video_id}.mp4"), "video file not found")
                # The training reader's own decoding and rules (evad_d2.data.video): what passes
                # here reads in training, variable frame rates and rotation metadata included.
                info = probe_video(path)
                if decode == "full":
                    scan_video(path, frame_rate=AVA_FRAME_RATE, info=info)
                entries[video_id] = {"num_frames": timeline_frame_count(info, AVA_FRAME_RATE)}
            else:
                entry = frames(video_id)  # the loader's own frame naming and counting
                if decode == "full":
                    _verify_images(entry["frame_dir"], entry["frame_pattern"], entry["num_frames"])
                entries[video_id] = entry
        except VideoReadError as e:
            report.error(f"{e}{where}")
    return entries


def _verify_images(frame_dir, pattern, n):
    from PIL import Image

    for i in range(1, n + 1):
        path = os.path.join(frame_dir, pattern.format(i))
        try:
            with Image.open(path) as img:
                img.load()
        except OSError as e:
            raise VideoReadError(path, f"cannot read frame image: {e}") from None


def _check_label_maps(files: dict, report) -> Optional[dict]:
    """The model's label map (None if missing or malformed), the evaluated subset checked against it."""
    label_map: Optional[dict] = None
    lm_path = files["label_map"]
    if not os.path.isfile(lm_path):
        report.error(f"{lm_path}: label map not found")
    else:
        try:
            label_map = read_label_map(lm_path)
        except AvaFormatError as e:
            report.error(str(e))
    eval_path = files["eval_label_map"]
    if label_map is not None and os.path.isfile(eval_path):
        try:
            unknown = sorted(set(read_label_map(eval_path)) - set(label_map))
            if unknown:
                report.error(f"{eval_path}: evaluated class ids {unknown} are not in {lm_path}")
        except AvaFormatError as e:
            report.error(str(e))
    return label_map


def _check_proposals(path: str, report) -> None:
    if is_pickle_file(path):
        try:
            read_proposals(path)
        except (AvaFormatError, UnsafePickleError) as e:
            report.error(str(e))
        return
    try:
        for item in iter_ava_rows_or_errors(path, policy="proposals"):
            if isinstance(item, AvaFormatError):
                report.error(str(item))
    except UnicodeDecodeError:
        report.error(f"{path}: not a text CSV and not a pickle (proposal files are CSVs or mmaction2's .pkl)")


def _check_split(root, f: dict, label_map, frame_source, decode, report, frames: VideoTimeline) -> None:
    """One split: exclusions, annotation and proposal rows, videos, keyframe times, frame list."""
    if os.path.isfile(f["exclusions"]):
        try:
            read_exclusions(f["exclusions"])
        except AvaFormatError as e:
            report.error(str(e))
    used: "OrderedDict[str, tuple]" = OrderedDict()
    keyframes = []
    bad_rows = 0
    for item in iter_ava_rows_or_errors(f["groundtruth"], label_map=label_map):
        if isinstance(item, AvaFormatError):
            report.error(str(item))
            bad_rows += 1
            continue
        used.setdefault(item.video_id, (f["groundtruth"], item.line))
        keyframes.append(item)
    if not keyframes and not bad_rows:
        report.error(f"{f['groundtruth']}: the annotation CSV has no rows (empty file)")
    if os.path.isfile(f["proposals"]):
        _check_proposals(f["proposals"], report)
    entries = _check_videos(root, frame_source, decode, used, report, frames)
    reported = set()
    for row in keyframes:
        entry = entries.get(row.video_id)
        if entry is None or (row.video_id, row.timestamp) in reported:
            continue
        n = entry["num_frames"]
        idx = keyframe_frame_index(row.timestamp, frame_rate=AVA_FRAME_RATE, start_sec=AVA_VIDEO_START_SEC)
        if not 0 <= idx < n:
            reported.add((row.video_id, row.timestamp))
            report.error(
                f"{f['groundtruth']}:{row.line}: timestamp {row.timestamp} is frame {idx}, outside video "
                f"{row.video_id} with {n} frames (valid: {AVA_VIDEO_START_SEC}..{AVA_VIDEO_START_SEC + (n - 1) // AVA_FRAME_RATE})"
            )
    if frame_source == "frames" and os.path.isfile(f["frame_list"]):
        _check_frame_list(frames.frames_dir, f["frame_list"], entries, report)


def validate_ava_root(
    root: str, frame_source: str = "auto", version: str = "2.2", decode: str = "full", out=None, *,
    frame_folder: Optional[str] = None, frame_pattern: Optional[str] = None,
) -> List[str]:
    """Validate the AVA-format dataset at ``root``; returns the problems (also printed to ``out``,
    by default the standard output). ``frame_folder`` / ``frame_pattern``: as for
    ``load_ava_dataset`` (default: ``frames/`` else ``rawframes/``; AVA's or mmaction2's names)."""
    out = sys.stdout if out is None else out
    report = _Report(out)
    try:
        frame_source = resolve_frame_source(root, frame_source)
    except FileNotFoundError:
        frame_source = "frames"
    files = {split: ava_files(root, split, version) for split in ("train", "val")}
    label_map = _check_label_maps(files["train"], report)
    splits = [s for s in ("train", "val") if os.path.isfile(files[s]["groundtruth"])]
    if not splits:
        report.error(f"{files['train']['groundtruth']}: no annotation CSV (neither train nor val) found")
    frames_dir = find_frame_folder(root, frame_folder)
    if frame_source == "video" and not os.path.isdir(os.path.join(root, "videos")):
        report.error(f"{os.path.join(root, 'videos')}: video folder not found")
    if frame_source == "frames" and not os.path.isdir(frames_dir):
        report.error(f"{frames_dir}: frame folder not found")
    frames = VideoTimeline("frames", root, frames_dir=frames_dir, frame_pattern=frame_pattern)
    for split in splits:
        _check_split(root, files[split], label_map, frame_source, decode, report, frames)
    if report.problems:
        print(f"{len(report.problems)} problem(s) found in {root}", file=out)
    else:
        print(f"OK: {root} ({', '.join(splits)}; {frame_source})", file=out)
    return report.problems


def _check_frame_list(frames_dir, path, entries, report):
    seen: Dict[str, int] = {}
    for item in iter_frame_list(path):
        if isinstance(item, AvaFormatError):
            report.error(str(item))
            continue
        expected = seen.get(item.video_id, 0)
        if item.frame_id != expected:
            report.error(f"{path}:{item.line}: frame_id {item.frame_id} of {item.video_id}, expected {expected} (frame ids must be consecutive from 0)")
        seen[item.video_id] = item.frame_id + 1
        entry = entries.get(item.video_id)
        if entry is None:
            continue
        standard = f"{item.video_id}/{entry['frame_pattern'].format(item.frame_id + 1)}"
        if item.path != standard:
            report.error(f"{path}:{item.line}: path {item.path!r} is not {standard!r} (the frame folder's file of frame_id + 1)")
        elif item.frame_id >= entry["num_frames"]:
            report.error(f"{path}:{item.line}: frame {os.path.join(frames_dir, item.path)} not found")


def _num_classes(args) -> Optional[int]:
    if args.num_classes is not None:
        return args.num_classes
    if args.config_file:
        return get_evad_cfg(args.config_file).MODEL.EVAD.NUM_ACTION_CLASSES
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-root", required=True, help="AVA-format root (annotations/, videos/ or frames/)")
    parser.add_argument("--frame-source", choices=["video", "frames", "auto"], default="auto")
    parser.add_argument("--version", default="2.2", help="annotation version in the file names (2.1 or 2.2)")
    parser.add_argument(
        "--decode", choices=["full", "header"], default="full",
        help="full: decode every video/frame (slow on real AVA); header: only open and count",
    )
    parser.add_argument("--frame-folder", default=None, help="frames folder under the root (default frames/, else rawframes/)")
    parser.add_argument("--frame-pattern", default=None, help="frame file names, e.g. img_%%05d.jpg (default: AVA's or mmaction2's)")
    parser.add_argument("--explain", action="store_true", help="also check and explain the usual causes of a zero mAP")
    parser.add_argument("--num-classes", type=int, default=None, help="--explain: classes the model predicts")
    parser.add_argument("--config-file", default=None, help="--explain: read the class count from this config")
    parser.add_argument("--detections", default=None, help="--explain: also check this detections CSV (ava_detections.csv)")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.dataset_root):
        print(f"ERROR {args.dataset_root}: dataset root not found", file=sys.stdout)
        return 1
    if args.frame_pattern is not None:
        try:
            parse_frame_pattern(args.frame_pattern)
        except ValueError as e:
            parser.error(str(e))
    problems = validate_ava_root(args.dataset_root, args.frame_source, args.version, args.decode,
                                 frame_folder=args.frame_folder, frame_pattern=args.frame_pattern)
    if args.explain:
        print("\nThe usual causes of a zero mAP:", file=sys.stdout)
        findings = diagnose(args.dataset_root, version=args.version, frame_source=args.frame_source,
                            num_classes=_num_classes(args), frame_folder=args.frame_folder,
                            frame_pattern=args.frame_pattern, detections=args.detections)
        problems = list(problems) + [f.message for f in findings if f.status == "problem"]
        print_findings(findings, sys.stdout)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
