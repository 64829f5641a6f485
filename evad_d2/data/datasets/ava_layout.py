"""Where an AVA-format root keeps its files, in the layouts of PySlowFast and mmaction2.

=====================  ==========================================  ====================================
file                   PySlowFast / AVA                            mmaction2
=====================  ==========================================  ====================================
frames                 ``frames/<vid>/<vid>_000001.jpg``           ``rawframes/<vid>/img_00001.jpg``
proposals              ``ava_{split}_predicted_boxes.csv``,        ``ava_dense_proposals_{split}
                       ``person_box_67091280_iou90/                .FAIR.recall_93.9.pkl``
                       ava_detection_{split}_boxes_and_labels.csv``
=====================  ==========================================  ====================================

Both number frames from 1 at 30 fps on the clip cut at second 900 (frame index ``i`` is file
number ``i + 1``). A frame pattern names one video's frame files: one format field for the
1-based number (``{:06d}`` or printf's ``%06d``) and optionally ``{video_id}``.
"""
import glob
import os
import re
import string
from typing import Dict, List, Optional

from ..video import VideoReadError

__all__ = [
    "AVA_FRAME_PATTERN",
    "MMACTION2_FRAME_PATTERN",
    "FRAME_FOLDERS",
    "ava_files",
    "detect_frame_pattern",
    "find_proposal_file",
    "find_frame_folder",
    "index_video_files",
    "parse_frame_pattern",
    "proposal_candidates",
    "resolve_frame_source",
    "video_frame_pattern",
]

AVA_FRAME_PATTERN = "{video_id}_{:06d}.jpg"  # PySlowFast / AVA's extraction command
MMACTION2_FRAME_PATTERN = "img_{:05d}.jpg"  # mmaction2's rawframes (filename_tmpl 'img_{:05}.jpg')
# Frame folders under the root, in the order "auto" looks for them.
FRAME_FOLDERS = ("frames", "rawframes")
# The evaluated-subset label map is named after the ActivityNet challenge year of its release.
_EVAL_LABEL_MAP_YEAR = {"2.1": 2018, "2.2": 2019}
_PRINTF_FIELD = re.compile(r"%(0?\d*)d")


def parse_frame_pattern(pattern: str) -> str:
    """``pattern`` in ``str.format`` form (printf ``%05d`` becomes ``{:05d}``), checked.

    Raises:
        ValueError: not exactly one number field (besides ``{video_id}``), a path separator, or
            a pattern that does not format; the message names the pattern.
    """
    fmt = pattern
    if "%" in pattern:
        if len(_PRINTF_FIELD.findall(pattern)) != 1 or "{" in pattern.replace("{video_id}", ""):
            raise ValueError(
                f"frame pattern {pattern!r}: a printf pattern needs exactly one %d field (and optionally "
                "{video_id}), e.g. 'img_%05d.jpg'"
            )
        fmt = _PRINTF_FIELD.sub(lambda m: "{:" + m.group(1) + "d}", pattern)
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(fmt) if f is not None]
    except ValueError as e:
        raise ValueError(f"frame pattern {pattern!r}: {e}") from None
    numbers = [f for f in fields if f != "video_id"]
    if numbers != [""]:
        raise ValueError(
            f"frame pattern {pattern!r} needs exactly one unnamed field for the 1-based frame number "
            f"(and optionally {{video_id}}), e.g. {AVA_FRAME_PATTERN!r} or {MMACTION2_FRAME_PATTERN!r}"
        )
    if "/" in fmt or os.sep in fmt:
        raise ValueError(f"frame pattern {pattern!r} names a file inside the video's folder: no path separators")
    try:
        fmt.format(1, video_id="v")
    except (ValueError, IndexError, KeyError) as e:
        raise ValueError(f"frame pattern {pattern!r} does not format a frame number: {e}") from None
    return fmt


def video_frame_pattern(pattern: str, video_id: str) -> str:
    """One video's file pattern (a single ``{}`` field): ``{video_id}`` filled in."""
    escaped = video_id.replace("{", "{{").replace("}", "}}")
    return parse_frame_pattern(pattern).replace("{video_id}", escaped)


def resolve_frame_source(root: str, frame_source: str) -> str:
    """``"video"`` or ``"frames"``; ``"auto"`` picks videos/ if present, else a frame folder."""
    if frame_source in ("video", "frames"):
        return frame_source
    if frame_source != "auto":
        raise ValueError(f"frame_source must be 'video', 'frames' or 'auto', got {frame_source!r}")
    if os.path.isdir(os.path.join(root, "videos")):
        return "video"
    if any(os.path.isdir(os.path.join(root, d)) for d in FRAME_FOLDERS):
        return "frames"
    raise FileNotFoundError(
        f"{root}: neither videos/ nor a frame folder ({', '.join(d + '/' for d in FRAME_FOLDERS)}) found; "
        "see datasets/README.md"
    )


def find_frame_folder(root: str, folder: Optional[str] = None) -> str:
    """The folder of per-video frame folders: ``root/folder``, or with None the first of
    :data:`FRAME_FOLDERS` that exists (``frames`` if none does)."""
    if folder is not None:
        return os.path.join(root, folder)
    for name in FRAME_FOLDERS:
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    return os.path.join(root, FRAME_FOLDERS[0])


def detect_frame_pattern(frame_dir: str, video_id: str, pattern: Optional[str] = None) -> str:
    """The file pattern of one video's frames: ``pattern`` if given, else AVA's or mmaction2's,
    whichever names an existing first frame.

    Raises:
        VideoReadError: with no pattern, a folder that has neither first frame (naming both).
    """
    if pattern is not None:
        return video_frame_pattern(pattern, video_id)
    candidates = [video_frame_pattern(p, video_id) for p in (AVA_FRAME_PATTERN, MMACTION2_FRAME_PATTERN)]
    for candidate in candidates:
        if os.path.isfile(os.path.join(frame_dir, candidate.format(1))):
            return candidate
    if not os.path.isdir(frame_dir):
        raise VideoReadError(frame_dir, "frame folder not found")
    raise VideoReadError(
        frame_dir, f"no first frame named {candidates[0].format(1)!r} (AVA/PySlowFast) or "
        f"{candidates[1].format(1)!r} (mmaction2); frames are numbered from 1. For other names register "
        "the dataset with frame_pattern=... (e.g. 'frame_%04d.png')"
    )


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


def proposal_candidates(root: str, split: str, version: str) -> List[str]:
    """Proposal files looked for, in this order (PySlowFast's, then mmaction2's)."""
    ann = os.path.join(root, "annotations")
    person_box = os.path.join(ann, "person_box_67091280_iou90")
    return (
        [os.path.join(ann, f"ava_{split}_predicted_boxes.csv"),
         os.path.join(person_box, f"ava_detection_{split}_boxes_and_labels.csv"),
         os.path.join(person_box, f"ava_detection_{split}_boxes_and_labels_include_negative_v{version}.csv")]
        + sorted(glob.glob(os.path.join(glob.escape(ann), f"ava_dense_proposals_{split}.FAIR.recall_*.pkl")))
    )


def find_proposal_file(root: str, split: str, version: str) -> Optional[str]:
    """The first existing file of :func:`proposal_candidates`, or None."""
    return next((p for p in proposal_candidates(root, split, version) if os.path.isfile(p)), None)


def ava_files(root: str, split: str, version: str) -> Dict[str, Optional[str]]:
    """Standard paths of a split's annotation files (they need not exist).

    Returns:
        dict with "groundtruth", "label_map", "eval_label_map", "exclusions", "proposals",
        "frame_list". "eval_label_map" falls back to any ``..._for_activitynet_*.pbtxt``;
        "proposals" is the first existing of :func:`proposal_candidates` (else the first).
    """
    ann = os.path.join(root, "annotations")
    eval_map = os.path.join(ann, f"ava_action_list_v{version}_for_activitynet_{_EVAL_LABEL_MAP_YEAR.get(version, 0)}.pbtxt")
    if not os.path.isfile(eval_map):
        found = sorted(glob.glob(os.path.join(glob.escape(ann), f"ava_action_list_v{version}_for_activitynet_*.pbtxt")))
        eval_map = found[0] if found else eval_map
    return {
        "groundtruth": os.path.join(ann, f"ava_{split}_v{version}.csv"),
        "label_map": os.path.join(ann, f"ava_action_list_v{version}.pbtxt"),
        "eval_label_map": eval_map,
        "exclusions": os.path.join(ann, f"ava_{split}_excluded_timestamps_v{version}.csv"),
        "proposals": find_proposal_file(root, split, version) or proposal_candidates(root, split, version)[0],
        "frame_list": os.path.join(root, "frame_lists", f"{split}.csv"),
    }
