"""The frame checks of the doctor: frame file names and the frame rate frames were extracted at."""
import os
import re
from typing import Dict, List, Optional, Tuple

from ..datasets.ava import AVA_FRAME_RATE, AVA_VIDEO_START_SEC
from ..datasets.ava_layout import AVA_FRAME_PATTERN, MMACTION2_FRAME_PATTERN, detect_frame_pattern, video_frame_pattern
from ..video import VideoInfo, VideoReadError, count_frames_in_folder, timeline_frame_count
from .findings import Finding

__all__ = ["check_frame_naming", "check_frame_rate", "suggest_frame_pattern"]

_NUMBERED = re.compile(r"^(?P<prefix>.*?)(?P<digits>\d+)(?P<ext>\.[A-Za-z0-9]+)$")


def suggest_frame_pattern(names: List[str], video_id: str) -> Optional[Tuple[str, int]]:
    """``(pattern, first number)`` that the numbered file names follow, e.g. ``("img_%04d.png", 0)``,
    or None. A prefix equal to the video id is written ``{video_id}``."""
    matches = [m for m in (_NUMBERED.match(n) for n in sorted(names)) if m]
    if not matches:
        return None
    m = matches[0]
    same = [x for x in matches if (x["prefix"], len(x["digits"]), x["ext"]) == (m["prefix"], len(m["digits"]), m["ext"])]
    prefix = m["prefix"].replace("%", "%%")
    if m["prefix"].startswith(video_id):
        prefix = "{video_id}" + prefix[len(video_id):]
    return f"{prefix}%0{len(m['digits'])}d{m['ext']}", min(int(x["digits"]) for x in same)


def _naming_problem(frames_dir: str, video_id: str) -> Optional[str]:
    """Why a video's frame folder has no first frame named like AVA's or mmaction2's, or None."""
    folder = os.path.join(frames_dir, video_id)
    try:
        pattern = detect_frame_pattern(folder, video_id)
    except VideoReadError:
        pattern = None
    if pattern is not None and not os.path.isfile(os.path.join(folder, pattern.format(0))):
        return None
    if not os.path.isdir(folder):
        return f"{folder} is missing"
    names = [n for n in os.listdir(folder) if not n.startswith(".")]
    guess = suggest_frame_pattern(names, video_id)
    if guess is None:
        return f"{folder} has no numbered frame files ({len(names)} entries)"
    pattern, first = guess
    zero_based = " numbered from 0 (AVA, mmaction2 and ffmpeg's %d number from 1; re-extract or rename)" if first == 0 else ""
    return f"{folder}: files are named like {pattern!r} (first number {first}){zero_based}; pass frame_pattern={pattern!r}"


def check_frame_naming(frames_dir: str, video_ids: List[str], frame_pattern: Optional[str]) -> List[Finding]:
    """Frame folders of the videos the annotations name: do their file names follow a known pattern?"""
    if not video_ids:
        return []
    if frame_pattern is not None:
        names = {video_frame_pattern(frame_pattern, v).format(1) for v in video_ids[:1]}
        return [Finding("frame naming", "ok", f"frame_pattern {frame_pattern!r} given (first frame e.g. {names.pop()!r})")]
    problems = [(v, p) for v, p in ((v, _naming_problem(frames_dir, v)) for v in video_ids) if p]
    if problems:
        folders = sorted(d for d in os.listdir(frames_dir)) if os.path.isdir(frames_dir) else []
        stray = sorted(set(folders) - set(video_ids))
        stray_text = f" The frame folder has other folders ({', '.join(stray[:3])}): named after other ids?" if stray else ""
        return [Finding(
            "frame naming", "problem",
            f"{len(problems)} of {len(video_ids)} videos have no frames named "
            f"{AVA_FRAME_PATTERN.replace('{video_id}', '<video_id>').format(1)!r} (AVA/PySlowFast) or "
            f"{MMACTION2_FRAME_PATTERN.format(1)!r} (mmaction2): {problems[0][1]}.{stray_text}",
            "register the dataset with register_ava(..., frame_pattern=...) (the pattern above), or re-extract "
            f"with ffmpeg -i VIDEO -r 30 -q:v 1 {frames_dir}/<video_id>/<video_id>_%06d.jpg",
        )]
    kinds = sorted({detect_frame_pattern(os.path.join(frames_dir, v), v).replace(v, "<video_id>") for v in video_ids})
    return [Finding("frame naming", "ok", f"frames of {len(video_ids)} videos named like {', '.join(repr(k.format(1)) for k in kinds)}")]


def _folder_count(frames_dir: str, video_id: str) -> Optional[int]:
    try:
        folder = os.path.join(frames_dir, video_id)
        return count_frames_in_folder(folder, detect_frame_pattern(folder, video_id))
    except VideoReadError:
        return None


def check_frame_rate(frames_dir: Optional[str], videos: Dict[str, VideoInfo], last_keyframe: Dict[str, float]) -> List[Finding]:
    """Frames extracted at the video's own rate instead of 30 fps.

    Args:
        frames_dir: the frames folder (None: the dataset reads videos only).
        videos: ``video_id -> VideoInfo`` of the videos present.
        last_keyframe: ``video_id -> its last annotated timestamp``.
    """
    findings = []
    for video_id, ts in sorted(last_keyframe.items()):
        n = _folder_count(frames_dir, video_id) if frames_dir else None
        info = videos.get(video_id)
        if n is not None and info is not None:
            expected = timeline_frame_count(info, AVA_FRAME_RATE)
            native = round(float(info.duration * info.fps))
            if abs(n - expected) > max(2, 0.02 * expected):
                at = f" (= its {float(info.fps):g} fps)" if abs(n - native) <= max(2, 0.02 * native) else ""
                findings.append(Finding(
                    "frame rate", "problem",
                    f"{os.path.join(frames_dir, video_id)} has {n} frames, but {float(info.duration):.2f} s at 30 fps are "
                    f"{expected}: the frames were extracted at {n / float(info.duration):.3g} fps{at}. The loader takes "
                    "frame (t - 900) * 30 as the keyframe of timestamp t, so keyframes and clips land at the wrong time",
                    "re-extract at 30 fps: ffmpeg -i VIDEO -r 30 -q:v 1 <root>/frames/<vid>/<vid>_%06d.jpg (or read the "
                    "videos: frame_source='video' resamples any rate)",
                ))
        elif n is not None and ts >= AVA_VIDEO_START_SEC and (ts - AVA_VIDEO_START_SEC) * AVA_FRAME_RATE >= n:
            rate = n / max(ts - AVA_VIDEO_START_SEC, 1)
            findings.append(Finding(
                "frame rate", "problem",
                f"the last keyframe of {video_id} (timestamp {ts:g}) is frame {int((ts - AVA_VIDEO_START_SEC) * AVA_FRAME_RATE)} "
                f"at 30 fps, but its folder has {n} frames (about {rate:.3g} per annotated second): extracted at the "
                "video's own rate, or the video is shorter than its annotations",
                "re-extract at 30 fps (ffmpeg -r 30)",
            ))
        if len(findings) >= 3:
            break
    if not findings:
        rates = sorted({f"{float(v.fps):g}" for v in videos.values()})
        note = f"; videos at {', '.join(rates)} fps are read on the 30 fps timeline" if rates else ""
        findings.append(Finding("frame rate", "ok", f"frame counts match 30 fps{note}"))
    return findings

