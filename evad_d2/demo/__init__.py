"""Running EVAD over whole videos (the package side of ``tools/demo.py`` and
``tools/visualize_pruning.py``).

* :mod:`.video_demo`: :class:`VideoDemo` (keyframe predictions over a video stream; the annotated
  video, JSON and CSV), :func:`build_demo_predictor`, :func:`check_input_video`;
* :mod:`.sources`: the frames of a video file, frame folder, camera device or network stream
  (:func:`open_source`, :class:`FrameSource`), a folder of videos as one input per video
  (:func:`expand_inputs`);
* :mod:`.live`: live mode (:class:`LiveDemo`): decoding in its own thread into a bounded ring,
  the model on the newest clip, latency and drops per keyframe; :mod:`.live_run`: with its
  outputs and a keep rate for a latency budget (:func:`run_live`);
* :mod:`.keep_rate`: the keep rate for a latency budget (measured table, :class:`KeepRateController`);
* :mod:`.writers`: the per-keyframe JSON and AVA CSV writers;
* :mod:`.pruning`: the token-pruning and decoder-attention pictures of one keyframe.
"""
from .keep_rate import KeepRateController, KeepRateTable, load_keep_rate_table
from .live import LiveDemo
from .live_run import run_live
from .pruning import ActorSelectionError, inspect_video_clip, select_actors, write_pruning_pictures
from .sources import FrameSource, SourceError, SourceFrame, expand_inputs, input_kind, is_live_spec, open_source
from .video_demo import VideoDemo, build_demo_predictor, check_input_video
from .writers import AvaCsvWriter, JsonKeyframeWriter, ava_timestamp, json_actor

__all__ = [
    "ActorSelectionError",
    "FrameSource",
    "KeepRateController",
    "KeepRateTable",
    "LiveDemo",
    "SourceError",
    "SourceFrame",
    "AvaCsvWriter",
    "JsonKeyframeWriter",
    "VideoDemo",
    "ava_timestamp",
    "build_demo_predictor",
    "check_input_video",
    "expand_inputs",
    "input_kind",
    "inspect_video_clip",
    "is_live_spec",
    "json_actor",
    "load_keep_rate_table",
    "open_source",
    "run_live",
    "select_actors",
    "write_pruning_pictures",
]
