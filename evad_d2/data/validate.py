"""Check an AVA-format dataset before training and report every problem by file and line.

    python -m evad_d2.data.validate --dataset-root DIR [--frame-source video|frames]
        [--version 2.2] [--decode full|header]

Checks: label maps parse (and the evaluated subset lies inside the model's classes); every CSV
row of the train/val annotations (and proposal files, if any) has the right columns, numbers,
boxes inside [0, 1] and known class ids (and an annotation CSV has rows); excluded-timestamp files parse; every
referenced video (or frame folder) exists, opens and, with ``--decode full``, decodes completely
up to the length its header declares, read by training's own decoder (frame times from
timestamps, rotation metadata applied: ``evad_d2.data.video``), so a video that passes here
reads in training; every timestamp falls inside its video; frame lists parse and name existing
frames. Exits 0 when nothing is wrong, 1 otherwise (2 for bad arguments).
"""
import argparse
import os
import sys
from collections import OrderedDict
from typing import Dict, List, Optional

from .formats.ava import AvaFormatError, iter_ava_rows_or_errors, iter_frame_list, read_exclusions
from .formats.label_map import read_label_map
from .datasets.ava import AVA_FRAME_RATE, AVA_VIDEO_START_SEC, ava_files, index_video_files
from .video import (
    VideoReadError,
    count_frames_in_folder,
    keyframe_frame_index,
    probe_video,
    scan_video,
    timeline_frame_count,
)

__all__ = ["validate_ava_root", "main"]


class _Report:
    def __init__(self, out):
        self.problems: List[str] = []
        self.out = out

    def error(self, message: str):
        self.problems.append(message)
        print(f"ERROR {message}", file=self.out)


def _check_videos(root, source, decode, used: "OrderedDict[str, tuple]", report) -> Dict[str, int]:
    """Open (and decode) every referenced video or frame folder; returns frames per video."""
    counts = {}
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
                counts[video_id] = timeline_frame_count(info, AVA_FRAME_RATE)
            else:
                frame_dir = os.path.join(root, "frames", video_id)
                pattern = video_id + "_{:06d}.jpg"
                n = count_frames_in_folder(frame_dir, pattern)
                if decode == "full":
                    _verify_images(frame_dir, pattern, n)
                counts[video_id] = n
        except VideoReadError as e:
            report.error(f"{e}{where}")
    return counts


def _verify_images(frame_dir, pattern, n):
    from PIL import Image

    for i in range(1, n + 1):
        path = os.path.join(frame_dir, pattern.format(i))
        try:
            with Image.open(path) as img:
                img.load()
        except OSError as e:
            raise VideoReadError(path, f"cannot read frame image: {e}") from None


def validate_ava_root(
    root: str, frame_source: str = "auto", version: str = "2.2", decode: str = "full", out=None
) -> List[str]:
    """Validate the AVA-format dataset at ``root``; returns the problems (also printed to ``out``,
    by default the standard output)."""
    out = sys.stdout if out is None else out
    report = _Report(out)
    if frame_source == "auto":
        frame_source = "video" if os.path.isdir(os.path.join(root, "videos")) else "frames"
    files = {split: ava_files(root, split, version) for split in ("train", "val")}
    label_map: Optional[dict] = None
    lm_path = files["train"]["label_map"]
    if not os.path.isfile(lm_path):
        report.error(f"{lm_path}: label map not found")
    else:
        try:
            label_map = read_label_map(lm_path)
        except AvaFormatError as e:
            report.error(str(e))
    eval_path = files["train"]["eval_label_map"]
    if label_map is not None and os.path.isfile(eval_path):
        try:
            unknown = sorted(set(read_label_map(eval_path)) - set(label_map))
            if unknown:
                report.error(f"{eval_path}: evaluated class ids {unknown} are not in {lm_path}")
        except AvaFormatError as e:
            report.error(str(e))

    splits = [s for s in ("train", "val") if os.path.isfile(files[s]["groundtruth"])]
    if not splits:
        report.error(f"{files['train']['groundtruth']}: no annotation CSV (neither train nor val) found")
    if frame_source == "video" and not os.path.isdir(os.path.join(root, "videos")):
        report.error(f"{os.path.join(root, 'videos')}: video folder not found")
    if frame_source == "frames" and not os.path.isdir(os.path.join(root, "frames")):
        report.error(f"{os.path.join(root, 'frames')}: frame folder not found")

    for split in splits:
        f = files[split]
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
            for item in iter_ava_rows_or_errors(f["proposals"], policy="proposals"):
                if isinstance(item, AvaFormatError):
                    report.error(str(item))
        counts = _check_videos(root, frame_source, decode, used, report)
        reported = set()
        for row in keyframes:
            n = counts.get(row.video_id)
            if n is None or (row.video_id, row.timestamp) in reported:
                continue
            idx = keyframe_frame_index(row.timestamp, frame_rate=AVA_FRAME_RATE, start_sec=AVA_VIDEO_START_SEC)
            if not 0 <= idx < n:
                reported.add((row.video_id, row.timestamp))
                report.error(
                    f"{f['groundtruth']}:{row.line}: timestamp {row.timestamp} is frame {idx}, outside video "
                    f"{row.video_id} with {n} frames (valid: {AVA_VIDEO_START_SEC}..{AVA_VIDEO_START_SEC + (n - 1) // AVA_FRAME_RATE})"
                )
        if frame_source == "frames" and os.path.isfile(f["frame_list"]):
            _check_frame_list(root, f["frame_list"], counts, report)
    if report.problems:
        print(f"{len(report.problems)} problem(s) found in {root}", file=out)
    else:
        print(f"OK: {root} ({', '.join(splits)}; {frame_source})", file=out)
    return report.problems


def _check_frame_list(root, path, counts, report):
    seen: Dict[str, int] = {}
    for item in iter_frame_list(path):
        if isinstance(item, AvaFormatError):
            report.error(str(item))
            continue
        expected = seen.get(item.video_id, 0)
        if item.frame_id != expected:
            report.error(f"{path}:{item.line}: frame_id {item.frame_id} of {item.video_id}, expected {expected} (frame ids must be consecutive from 0)")
        seen[item.video_id] = item.frame_id + 1
        standard = f"{item.video_id}/{item.video_id}_{item.frame_id + 1:06d}.jpg"
        if item.path != standard:
            report.error(f"{path}:{item.line}: path {item.path!r} is not the standard {standard!r}")
        elif item.video_id in counts and item.frame_id >= counts[item.video_id]:
            report.error(f"{path}:{item.line}: frame {os.path.join(root, 'frames', item.path)} not found")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-root", required=True, help="AVA-format root (annotations/, videos/ or frames/)")
    parser.add_argument("--frame-source", choices=["video", "frames", "auto"], default="auto")
    parser.add_argument("--version", default="2.2", help="annotation version in the file names (2.1 or 2.2)")
    parser.add_argument(
        "--decode", choices=["full", "header"], default="full",
        help="full: decode every video/frame (slow on real AVA); header: only open and count",
    )
    args = parser.parse_args(argv)
    if not os.path.isdir(args.dataset_root):
        print(f"ERROR {args.dataset_root}: dataset root not found", file=sys.stdout)
        return 1
    problems = validate_ava_root(args.dataset_root, args.frame_source, args.version, args.decode)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
