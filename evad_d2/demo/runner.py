"""``tools/demo.py``'s work for any input: one :meth:`VideoDemo.run` per video of a folder (outputs
named after each video), or one for a file, frame folder, camera or stream.

Output names for a folder of videos: a name with ``{name}`` is a template (``out/{name}.gif``);
any other is a folder that gets ``<name>.mp4`` (``.json``, ``.csv``, ``.jsonl`` for the records).
"""
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from .sources import SourceError, expand_inputs, input_kind, open_source
from .video_demo import VideoDemo, check_input_video

__all__ = ["DemoOutputs", "SourceOptions", "check_inputs", "output_paths", "run_demo"]

logger = logging.getLogger("evad_d2.demo")

_DEFAULT_EXTENSIONS = {"output": ".mp4", "json": ".json", "csv": ".csv", "jsonl": ".jsonl"}


@dataclass(frozen=True)
class DemoOutputs:
    """Where one run writes: the annotated video (file or URL) and the three records (None: not written)."""

    output: Optional[str] = None
    json: Optional[str] = None
    csv: Optional[str] = None
    jsonl: Optional[str] = None


@dataclass(frozen=True)
class SourceOptions:
    """How inputs are opened (:func:`~evad_d2.demo.sources.open_source`'s arguments)."""

    fps: Optional[float] = None
    open_timeout: float = 10.0
    stall_timeout: float = 5.0
    options: Dict[str, str] = field(default_factory=dict)


def _per_video(path: Optional[str], kind: str, name: str) -> Optional[str]:
    if path is None:
        return None
    if "{name}" in path:
        return path.replace("{name}", name)
    os.makedirs(path, exist_ok=True)
    return os.path.join(path, name + _DEFAULT_EXTENSIONS[kind])


def output_paths(outputs: DemoOutputs, name: str, several: bool) -> DemoOutputs:
    """The outputs of the input named ``name``: ``outputs`` itself for a single input; for one of
    several (a folder of videos), each template filled in or folder joined with ``<name><ext>``."""
    if not several:
        return outputs
    return DemoOutputs(*(_per_video(getattr(outputs, k), k, name) for k in ("output", "json", "csv", "jsonl")))


def check_inputs(input_spec: str, fps: Optional[float] = None) -> str:
    """Check an input before the model is built, without opening devices or streams; returns
    its :func:`~evad_d2.demo.sources.input_kind`.

    Raises:
        VideoReadError / SourceError: naming a missing or unreadable video (each of a folder's),
            a folder with neither videos nor frames, or a frame folder without ``fps``.
    """
    kind = input_kind(input_spec)
    if kind == "frames" and not fps:
        raise SourceError(input_spec, "a frame folder has no frame rate: pass --fps (e.g. --fps 30)")
    if kind in ("file", "videos"):
        for spec in expand_inputs(input_spec):
            check_input_video(spec)
    return kind


def run_demo(demo: VideoDemo, input_spec: str, outputs: DemoOutputs, *, sources: SourceOptions = SourceOptions(),
             video_id: Optional[str] = None, **run_kwargs) -> List[Dict]:
    """Run ``demo`` over every input ``input_spec`` stands for.

    Args:
        demo: the demo.
        input_spec: a video file, a folder of videos, a frame folder, ``/dev/videoN`` or a
            stream URL.
        outputs: for a folder of videos, templates or folders (see the module docstring).
        sources: how to open the inputs.
        video_id: the records' video id for a single input (a folder's videos use their names).
        run_kwargs: the other arguments of :meth:`VideoDemo.run`.

    Returns:
        one statistics dict per input (:meth:`VideoDemo.run`'s, plus ``"input"`` and the
        ``"outputs"`` written).

    Raises:
        VideoReadError / SourceError: naming an input that cannot be opened or read (a folder's
            videos before it are done).
        ValueError: ``video_id`` with a folder of videos.
    """
    specs = expand_inputs(input_spec)
    several = input_kind(input_spec) == "videos"
    if several and video_id:
        raise ValueError("--video-id names one video; a folder's videos are named after their files")
    results = []
    for spec in specs:
        source = open_source(spec, fps=sources.fps, open_timeout=sources.open_timeout,
                             stall_timeout=sources.stall_timeout, options=sources.options)
        paths = output_paths(outputs, source.name, several)
        stats = demo.run(source, paths.output, json_path=paths.json, csv_path=paths.csv, jsonl_path=paths.jsonl,
                         video_id=video_id, **run_kwargs)
        if stats["end_reason"] not in ("end", None):
            logger.warning(f"{spec}: input {stats['end_reason']} after {stats['num_frames']} frames; outputs finalised")
        results.append({**stats, "input": spec, "outputs": {k: v for k, v in vars(paths).items() if v}})
    return results
