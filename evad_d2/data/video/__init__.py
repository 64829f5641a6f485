"""Video: the one home of reading, clip sampling and writing.

* :mod:`.reader`: probe a video file, decode it by presentation time (variable frame rates,
  rotation metadata), read the frames of a clip (training), scan it whole (the validator);
* :mod:`.frame_folder`: the same frames from a folder of extracted images;
* :mod:`.sampler`: which frames form a clip, by timeline index (training) or by time on a decoded
  stream (the demo), and the keyframe-position rule (:func:`resolve_keyframe_index`);
* :mod:`.writer`: a video (mp4, webm, GIF, MPEG-TS or a network re-stream, by name) that keeps
  each frame's time.
"""
from .frame_folder import count_frames_in_folder, read_frame_folder
from .reader import (
    TIMELINE_RATE,
    VideoFrame,
    VideoInfo,
    VideoReadError,
    VideoScan,
    iter_video_frames,
    probe_video,
    read_video_frames,
    scan_video,
    timeline_frame_count,
)
from .sampler import (
    Clip,
    KeyframeBatcher,
    KeyframeClipSampler,
    clip_frame_indices,
    keyframe_frame_index,
    keyframe_sampler,
    read_clip_at,
    resolve_keyframe_index,
)
from .writer import Mp4Writer, OutputFormat, VideoWriteError, VideoWriter, output_format

__all__ = [
    "Clip",
    "KeyframeBatcher",
    "KeyframeClipSampler",
    "Mp4Writer",
    "OutputFormat",
    "TIMELINE_RATE",
    "VideoFrame",
    "VideoInfo",
    "VideoReadError",
    "VideoScan",
    "VideoWriteError",
    "VideoWriter",
    "clip_frame_indices",
    "count_frames_in_folder",
    "iter_video_frames",
    "keyframe_frame_index",
    "keyframe_sampler",
    "output_format",
    "probe_video",
    "read_clip_at",
    "read_frame_folder",
    "read_video_frames",
    "resolve_keyframe_index",
    "scan_video",
    "timeline_frame_count",
]
