"""Convert CVAT video exports ("CVAT for video 1.1" XML) into an AVA-format dataset root.

    python tools/convert_cvat.py VIDEO.xml [VIDEO2.xml ...] --out ROOT --split train
        [--videos DIR] [--fps F] [--keyframe-interval 1] [--actions attribute|label|checkboxes]
        [--action-attribute action] [--person-label person] [--time-offset 900]

writes, under ``ROOT`` (the layout ``evad_d2.data.register_ava`` reads, datasets/README.md)::

    annotations/ava_{split}_v2.2.csv        video_id, timestamp, x1, y1, x2, y2, action_id, person_id
    annotations/ava_action_list_v2.2.pbtxt  the classes, ids 1..K (reused if it exists: ids stay)
    frame_lists/{split}.csv                 PySlowFast frame lists of the 30 fps timeline
    videos/<video_id>.<ext>                 copies of the videos (with --videos)

Keyframes are every ``keyframe_interval`` whole seconds from the start of the video (AVA
timestamps are whole seconds; AVA itself has one per second), written as ``time_offset +
second`` (900: AVA's convention for its clips cut at second 900, which the loader's default
``video_start_sec=900`` undoes). The keyframe of second ``s`` is the video frame the loader's
30 fps timeline shows there: the last one before ``s + 1/60`` s, i.e. ``ceil(fps * (s + 1/60)) - 1``.
On it, every track (of ``person_labels``) that is not outside gives one row per action
(boxes normalised by the export's original size, clipped into the frame; the track id is the
person id); a person without an action at a keyframe is left out (AVA has none: counted in the
summary).
"""
import csv
import math
import os
import shutil
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

from ..utils.atomic_io import atomic_write
from .formats.cvat import CvatFormatError, CvatVideo, box_actions, box_at, class_names, read_cvat_video
from .formats.label_map import read_label_map
from .video import probe_video, timeline_frame_count

__all__ = ["CvatSource", "convert_cvat", "cvat_sources", "keyframe_video_frame", "label_map_text"]

TIMELINE_RATE = 30  # the AVA loader's timeline (frame i at i / 30 s)
_BOX_DECIMALS = 4


@dataclass(frozen=True)
class CvatSource:
    """One export: its XML, its video (optional: copied into ``videos/`` and probed for the
    frame rate and length) and the video id the rows use."""

    xml: str
    video_id: str
    video: Optional[str] = None


def cvat_sources(xmls: Sequence[str], videos: Optional[Sequence[str]] = None,
                 video_dir: Optional[str] = None) -> List[CvatSource]:
    """Exports with their videos: ``videos[i]`` for ``xmls[i]``, or the file of ``video_dir``
    named like the XML (``clip1.xml`` -> ``clip1.mp4``). The video id is the video's file name
    without extension, else the XML's.

    Raises:
        ValueError: ``videos`` of another length than ``xmls``, or no video in ``video_dir``.
    """
    if videos and len(videos) != len(xmls):
        raise ValueError(f"{len(xmls)} XML files but {len(videos)} videos: give one video per XML, in the same order")
    sources = []
    for i, xml in enumerate(xmls):
        video = videos[i] if videos else None
        stem = os.path.splitext(os.path.basename(xml))[0]
        if video is None and video_dir is not None:
            found = sorted(n for n in os.listdir(video_dir) if os.path.splitext(n)[0] == stem)
            if not found:
                raise ValueError(f"{xml}: no video named {stem}.* in {video_dir}")
            video = os.path.join(video_dir, found[0])
        video_id = os.path.splitext(os.path.basename(video))[0] if video else stem
        sources.append(CvatSource(xml, video_id, video))
    return sources


def keyframe_video_frame(second: float, fps: float) -> int:
    """The native frame shown at ``second`` on the 30 fps timeline (see the module docstring)."""
    return max(0, math.ceil(fps * (second + 0.5 / TIMELINE_RATE) - 1e-9) - 1)


def label_map_text(names: Sequence[str]) -> str:
    """A label map (``item { name: ... id: ... }``, ids 1..K in ``names`` order)."""
    escaped = [n.replace("\\", "\\\\").replace('"', '\\"') for n in names]
    return "".join(f'item {{\n  name: "{n}"\n  id: {i}\n}}\n' for i, n in enumerate(escaped, start=1))


def _class_ids(videos: List[CvatVideo], label_map_path: str, actions: str, attribute: str,
               person_labels, log) -> Dict[str, int]:
    """Class name -> id: from an existing label map (every declared class must be in it), else
    ids 1..K over the exports' declared classes, written to ``label_map_path``."""
    declared = list(dict.fromkeys(n for v in videos for n in class_names(v, actions, attribute, person_labels)))
    if os.path.isfile(label_map_path):
        ids = {name: cid for cid, name in read_label_map(label_map_path).items()}
        missing = [n for n in declared if n not in ids]
        if missing:
            raise CvatFormatError(
                videos[0].path, f"classes {missing} are not in the existing label map {label_map_path} "
                "(converting another split keeps its ids): add them there, or convert into a new root"
            )
        log(f"Using the label map {label_map_path} ({len(ids)} classes)")
        return ids
    if not declared:
        raise CvatFormatError(videos[0].path, "the export declares no action classes (see --actions)")
    with atomic_write(label_map_path, "w") as f:
        f.write(label_map_text(declared))
    log(f"Wrote {label_map_path}: {len(declared)} classes {declared}")
    return {name: i for i, name in enumerate(declared, start=1)}


def _timing(video: CvatVideo, source: CvatSource, fps: Optional[float]):
    """(native fps, native frames, timeline frames) from the video file, else ``fps`` + the meta."""
    if source.video is not None:
        info = probe_video(source.video)
        if (info.width, info.height) != (video.width, video.height):
            raise CvatFormatError(
                video.path, f"the export's original size {video.width}x{video.height} differs from the video "
                f"{source.video} ({info.width}x{info.height}): is it the same video?"
            )
        return float(fps or info.fps), info.num_frames, timeline_frame_count(info, TIMELINE_RATE)
    if fps is None or video.num_frames is None:
        raise CvatFormatError(video.path, "without its video, the frame rate (--fps) and the meta's <stop_frame> or <size> are needed")
    return float(fps), video.num_frames, max(1, math.ceil(video.num_frames * TIMELINE_RATE / fps))


def _video_rows(video: CvatVideo, source: CvatSource, ids: Dict[str, int], *, fps, interval, actions, attribute,
                person_labels, time_offset, stats) -> tuple:
    """(annotation rows, timeline frames) of one export."""
    native_fps, native_frames, timeline_frames = _timing(video, source, fps)
    rows = []
    tracks = [t for t in video.tracks if not person_labels or t.label in person_labels]
    second = 0
    while keyframe_video_frame(second, native_fps) < native_frames and second * TIMELINE_RATE < timeline_frames:
        frame = keyframe_video_frame(second, native_fps)
        stats["keyframes"] += 1
        for track in tracks:
            box = box_at(track, frame)
            if box is None:
                continue
            x1, y1, x2, y2 = (min(max(v / s, 0.0), 1.0) for v, s in zip(box.box, (video.width, video.height) * 2))
            if x2 <= x1 or y2 <= y1:
                stats["empty_boxes"] += 1
                continue
            names = box_actions(track, box, actions, attribute)
            if actions == "checkboxes":
                names = [n for n in names if n in ids]
            unknown = [n for n in names if n not in ids]
            if unknown:
                raise CvatFormatError(
                    video.path, f"track {track.track_id}, frame {frame}: action {unknown[0]!r} is not a declared class "
                    f"({sorted(ids)})"
                )
            if not names:
                stats["persons_without_action"] += 1
                continue
            stats["boxes"] += 1
            coords = [f"{v:.{_BOX_DECIMALS}f}" for v in (x1, y1, x2, y2)]
            rows += [[source.video_id, f"{time_offset + second:04d}", *coords, str(ids[n]), str(track.track_id)] for n in names]
        second += interval
    return rows, timeline_frames


def convert_cvat(
    sources: Sequence[CvatSource],
    out: str,
    split: str,
    *,
    fps: Optional[float] = None,
    keyframe_interval: int = 1,
    actions: str = "attribute",
    action_attribute: str = "action",
    person_labels: Optional[Sequence[str]] = None,
    time_offset: int = 900,
    version: str = "2.2",
    log: Callable[..., None] = print,
) -> dict:
    """Write the split of an AVA-format root from CVAT exports (see the module docstring).

    Args:
        sources: the exports (one video each).
        out: the dataset root (created).
        split: "train" or "val" (file names).
        fps: the videos' frame rate (default: read from each video; required without videos).
        keyframe_interval: seconds between keyframes (a whole number >= 1).
        actions, action_attribute: where actions are (:data:`evad_d2.data.formats.cvat.ACTION_SOURCES`).
        person_labels: read only tracks with these labels (default all).
        time_offset: added to the keyframe's second to make its timestamp.
        version: the annotation version in the file names.
        log: where progress lines go.

    Returns:
        counts: ``videos``, ``keyframes``, ``boxes``, ``rows``, ``persons_without_action``,
        ``empty_boxes``, ``classes``; and the written paths ``annotations``, ``label_map``,
        ``frame_list``.

    Raises:
        CvatFormatError: a malformed export, an undeclared action, a size mismatch with the video.
        ValueError: bad arguments (interval, duplicate video ids).
    """
    if int(keyframe_interval) != keyframe_interval or keyframe_interval < 1:
        raise ValueError(f"keyframe_interval must be a whole number of seconds >= 1 (AVA timestamps are whole seconds), got {keyframe_interval}")
    ids_seen = [s.video_id for s in sources]
    if len(set(ids_seen)) != len(ids_seen) or not sources:
        raise ValueError(f"need one or more exports with distinct video ids, got {ids_seen}")
    for d in ("annotations", "frame_lists", "videos"):
        os.makedirs(os.path.join(out, d), exist_ok=True)
    videos = [read_cvat_video(s.xml) for s in sources]
    paths = {
        "annotations": os.path.join(out, "annotations", f"ava_{split}_v{version}.csv"),
        "label_map": os.path.join(out, "annotations", f"ava_action_list_v{version}.pbtxt"),
        "frame_list": os.path.join(out, "frame_lists", f"{split}.csv"),
    }
    ids = _class_ids(videos, paths["label_map"], actions, action_attribute, person_labels, log)
    stats = {"videos": 0, "keyframes": 0, "boxes": 0, "rows": 0, "persons_without_action": 0, "empty_boxes": 0,
             "classes": len(ids)}
    rows, frame_rows = [], []
    for video_idx, (video, source) in enumerate(zip(videos, sources)):
        video_rows, timeline_frames = _video_rows(
            video, source, ids, fps=fps, interval=int(keyframe_interval), actions=actions, attribute=action_attribute,
            person_labels=person_labels, time_offset=time_offset, stats=stats,
        )
        rows += video_rows
        vid = source.video_id
        frame_rows += [f'{vid} {video_idx} {i} {vid}/{vid}_{i + 1:06d}.jpg ""' for i in range(timeline_frames)]
        if source.video is not None:
            target = os.path.join(out, "videos", vid + os.path.splitext(source.video)[1])
            if not os.path.exists(target) or not os.path.samefile(source.video, target):
                shutil.copyfile(source.video, target)
        stats["videos"] += 1
    with atomic_write(paths["annotations"], "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    with atomic_write(paths["frame_list"], "w") as f:
        f.write("original_vido_id video_idx frame_id path labels\n" + "".join(r + "\n" for r in frame_rows))
    stats["rows"] = len(rows)
    log(
        f"Wrote {paths['annotations']}: {stats['rows']} rows, {stats['boxes']} boxes on {stats['keyframes']} keyframes "
        f"of {stats['videos']} videos ({stats['persons_without_action']} persons without an action left out)"
    )
    return {**stats, **paths}
