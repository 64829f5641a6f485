"""Running EVAD over whole videos (the package side of ``tools/demo.py`` and
``tools/visualize_pruning.py``).

* :mod:`.video_demo`: :class:`VideoDemo` (keyframe predictions over a video stream; the annotated
  video, JSON and CSV), :func:`build_demo_predictor`, :func:`check_input_video`;
* :mod:`.writers`: the per-keyframe JSON and AVA CSV writers;
* :mod:`.pruning`: the token-pruning and decoder-attention pictures of one keyframe.
"""
from .pruning import ActorSelectionError, inspect_video_clip, select_actors, write_pruning_pictures
from .video_demo import VideoDemo, build_demo_predictor, check_input_video
from .writers import AvaCsvWriter, JsonKeyframeWriter, ava_timestamp, json_actor

__all__ = [
    "ActorSelectionError",
    "AvaCsvWriter",
    "JsonKeyframeWriter",
    "VideoDemo",
    "ava_timestamp",
    "build_demo_predictor",
    "check_input_video",
    "inspect_video_clip",
    "json_actor",
    "select_actors",
    "write_pruning_pictures",
]
