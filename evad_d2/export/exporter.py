"""Export of an EVAD model for deployment: TorchScript (tracing, as detectron2's
``export_model.py``), a ``torch.export`` ExportedProgram, or ONNX (run with ONNX Runtime; see
``onnx_export.py``).

The exported graph takes one clip and returns the actors of its keyframe; it needs neither
detectron2 nor evad_d2 to run, only ``torch`` and ``torchvision`` (for RoIAlign)::

    import torch, torchvision  # torchvision registers the RoIAlign op the graph calls
    model = torch.jit.load("model.ts")                   # --format torchscript
    model = torch.export.load("model.pt2").module()      # --format exported_program
    boxes, scores, action_scores = model(clip)  # clip: (3, T, H, W) float RGB in [0, 255]

``--format onnx`` writes ``model.onnx``, which needs neither torch nor torchvision: ONNX Runtime
runs it (``session.run(None, {"clip": clip_numpy})``; :class:`OnnxRuntimeGraph` wraps that).

What export fixes: the clip size (T, H, W) and the keep rates, because the number of tokens each
pruning layer keeps becomes a constant of the graph; the device the export ran on. What stays
dynamic: the person-score threshold, so the number of actors varies from clip to clip. A clip of
another size is refused (TorchScript: a ``torch.jit.Error`` naming both shapes; ExportedProgram:
its own input-shape check; ONNX: ONNX Runtime's, or OnnxRuntimeGraph's ValueError). ``model.json`` beside the graph records all of this, and the class ids
and names of the score columns.
"""
import json
import logging
import os
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..modeling.postprocessing import detection_probabilities, rescale_boxes, select_detections
from ..utils.atomic_io import atomic_write
from .onnx_export import ONNX_OPSET, OnnxRuntimeGraph, onnx_program, onnxruntime_providers, save_onnx

__all__ = ["ExportableEVAD", "EXPORT_FORMATS", "export_evad", "load_exported", "make_graph"]

logger = logging.getLogger(__name__)

# Largest |graph - eager| the export check accepts on scores (boxes: times their size in pixels).
CHECK_ATOL = 1e-4
# Format -> file name of the graph in the export directory.
EXPORT_FORMATS = {"torchscript": "model.ts", "exported_program": "model.pt2", "onnx": "model.onnx"}


@torch.jit.script_if_tracing
def _check_clip(clip: Tensor, expected: List[int]) -> Tensor:
    # Scripted when traced, so that the check runs on every call of the TorchScript graph (a
    # traced Python ``if`` would run once, at export).
    if list(clip.shape) != expected:
        raise RuntimeError(
            "this EVAD graph was exported for clips of shape (C, T, H, W) = "
            + str(expected)
            + " but got "
            + str(list(clip.shape))
            + ": resize the frames to the exported size, or export again with --input-size"
        )
    return clip


class ExportableEVAD(nn.Module):
    """EVAD with a tensor interface, the module that gets exported.

    Its outputs equal those of ``model([{"clip": clip}])`` (boxes in the clip's pixels).

    Args:
        model: an EVAD model in eval mode.
        input_size: (T, H, W) of the clips the graph will take.
    """

    def __init__(self, model: nn.Module, input_size: Sequence[int]):
        super().__init__()
        self.model = model
        self.training = model.training  # no "exporting in training mode" warning for an eval model
        self.input_shape = [3, *(int(s) for s in input_size)]

    def forward(self, clip: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """
        Args:
            clip: (3, T, H, W) float RGB in [0, 255] (the model's pixel range).

        Returns:
            boxes (N, 4) XYXY in the clip's pixels, person scores (N,), action scores (N, C),
            all float32; N = the proposals whose person score passes the threshold.
        """
        clip = _check_clip(clip, self.input_shape)
        model = self.model
        images = model.preprocess_clips([{"clip": clip}])
        loc_outputs, action_logits = model.run_network(images)
        person, boxes, actions = detection_probabilities(loc_outputs[-1], action_logits[-1])
        # EVAD.inference and EVAD.postprocess in their tensor-only form (modeling/postprocessing.py),
        # the output size being the clip's own.
        size = (self.input_shape[2], self.input_shape[3])
        boxes, scores, actions = select_detections(
            person[0], boxes[0], actions[0], size,
            score_thresh=model.score_thresh, official=model.official_mode, keep_all_if_none=model.keep_all_if_none,
        )
        boxes, keep = rescale_boxes(boxes, size, size, official=model.official_mode)
        return boxes[keep], scores[keep], actions[keep]


def export_evad(
    model: nn.Module,
    input_size: Sequence[int],
    output_dir: str,
    *,
    fmt: str = "torchscript",
    metadata: Optional[Dict] = None,
    example: Optional[Tensor] = None,
    opset: int = ONNX_OPSET,
    check_atol: float = CHECK_ATOL,
) -> Dict:
    """Export ``model`` for clips of ``input_size``: the graph and ``model.json`` in ``output_dir``.

    The saved graph is loaded back and compared with the eager model on a second clip; a
    difference beyond float rounding raises (tracing would otherwise fail silently on Python
    control flow that depends on the data).

    Args:
        model: an EVAD model (put in eval mode here), on the device the graph should run on.
        input_size: (T, H, W) of the clips.
        output_dir: created if missing.
        fmt: one of ``EXPORT_FORMATS``.
        metadata: extra entries for ``model.json`` (e.g. class names).
        example: a (3, T, H, W) clip to export with (default: random).
        opset: ONNX opset (``fmt="onnx"`` only; at least ``onnx_export.MIN_ONNX_OPSET``).
        check_atol: tolerance of the check (boxes: relative to their size). ONNX Runtime's kernels
            round differently from torch's: on ViT-B with random weights the outputs differed by
            up to 2e-4 (torch's own explicit-attention path differs from its flash path by 9e-4).

    Returns:
        The contents of ``model.json`` (with the check's ``"max_abs_diff"`` and ``"check_actors"``).
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export format must be one of {sorted(EXPORT_FORMATS)}, got {fmt!r}")
    t, h, w = (int(s) for s in input_size)
    if min(t, h, w) < 1:
        raise ValueError(f"input size must be positive (T, H, W), got {tuple(input_size)}")
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(0)
    if example is None:
        example = torch.rand(3, t, h, w, generator=gen) * 255
    check = (torch.rand(3, t, h, w, generator=gen) * 255).to(device)
    wrapper = ExportableEVAD(model, (t, h, w))
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, EXPORT_FORMATS[fmt])
    if fmt == "onnx":
        save_onnx(onnx_program(wrapper, example.to(device), opset), path)
        metadata = {"opset": int(opset), **(metadata or {})}
    else:
        graph = make_graph(wrapper, example.to(device), fmt)
        if fmt == "torchscript":
            graph.save(path)
        else:
            torch.export.save(graph, path)

    max_diff, check_actors = _check_graph(model, _load_graph(path, fmt, device), check, check_atol)
    info = _export_info(model, fmt, (t, h, w), device, max_diff, check_actors, metadata)
    with atomic_write(os.path.join(output_dir, "model.json"), "w") as f:
        json.dump(info, f, indent=2)
    logger.info(
        "Exported %s for clips %s (check on a second clip: %d actors, max |diff| %.2e)",
        path, info["input"]["shape"], info["check_actors"], max_diff,
    )
    if not info["check_actors"]:
        logger.warning("No actor passed the threshold on the check clip: the export check compared output shapes only")
    return info


def _check_graph(model: nn.Module, graph: Callable, clip: Tensor, atol: float = CHECK_ATOL) -> Tuple[float, int]:
    """Max |difference| between the graph and the model on ``clip``, and the number of actors."""
    with torch.no_grad():
        # The reference is the model's own forward (Instances, detectron2's postprocessing).
        inst = model([{"clip": clip}])[0]["instances"]
        expected = (inst.pred_boxes.tensor, inst.scores, inst.pred_action_scores)
        got = graph(clip)
    return _compare(expected, got, atol), int(expected[0].shape[0])


def _export_info(
    model: nn.Module, fmt: str, size: Tuple[int, int, int], device, max_diff: float, check_actors: int, metadata
) -> Dict:
    """The contents of ``model.json``."""
    return {
        "format": fmt,
        "file": EXPORT_FORMATS[fmt],
        "input": {"shape": [3, *size], "dtype": "float32", "range": [0, 255], "layout": "(C, T, H, W) RGB"},
        "outputs": ["boxes (N, 4) XYXY in input pixels", "scores (N,) person", "action_scores (N, C)"],
        "device": str(device),
        "keep_rates": [float(r) for r in model.backbone.keep_rates],
        "score_thresh": float(model.score_thresh),
        # Official-checkpoint mode: threshold >=, boxes clipped to [0, w-1] x [0, h-1], empty ones kept.
        "official_mode": bool(model.official_mode),
        "torch": torch.__version__,
        "max_abs_diff": max_diff,
        # Actors on the check clip: with 0 (e.g. random weights) the check compared shapes only.
        "check_actors": check_actors,
        **(metadata or {}),
    }


def make_graph(wrapper: ExportableEVAD, example: Tensor, fmt: str, opset: int = ONNX_OPSET):
    """The in-memory export of ``wrapper`` for clips like ``example``: a ScriptModule
    (``torchscript``), an ExportedProgram (``exported_program``; call its ``.module()``) or an
    :class:`OnnxRuntimeGraph` (``onnx``, on the providers for ``example``'s device)."""
    if fmt == "onnx":
        program = onnx_program(wrapper, example, opset)
        return OnnxRuntimeGraph(program.model_proto.SerializeToString(), onnxruntime_providers(example.device))
    with torch.no_grad(), warnings.catch_warnings():
        if fmt == "torchscript":
            # The tracer warns at every shape computation it freezes (token counts, RoI sizes):
            # that is the intended fixing of the input size; export_evad's check catches the rest.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # check_trace=False: the tracer's own check re-runs the same input; ours uses another.
            return torch.jit.trace(wrapper, (example,), check_trace=False)
        return torch.export.export(wrapper, (example,), strict=False)


def _load_graph(path: str, fmt: str, map_location=None) -> Callable:
    if fmt == "onnx":
        # ONNX Runtime on the providers of map_location (CUDA when it names a CUDA device).
        return OnnxRuntimeGraph(path, onnxruntime_providers(map_location or "cpu"))
    import torchvision  # noqa: F401  (registers torchvision::roi_align, which the graph calls)

    if fmt == "torchscript":
        return torch.jit.load(path, map_location=map_location)
    return torch.export.load(path).module()


def _compare(expected: Tuple[Tensor, ...], got: Tuple[Tensor, ...], atol: float = CHECK_ATOL) -> float:
    names = ("boxes", "scores", "action_scores")
    diff = 0.0
    for name, a, b in zip(names, expected, got):
        if a.shape != b.shape:
            raise RuntimeError(f"exported graph disagrees with the model: {name} {tuple(b.shape)} vs {tuple(a.shape)}")
        if a.numel():
            d = float((a.float() - b.float()).abs().max())
            # Boxes are in pixels: compare them relative to their size.
            tol = atol * max(1.0, float(a.abs().max())) if name == "boxes" else atol
            if d > tol:
                raise RuntimeError(
                    f"exported graph disagrees with the model: {name} differ by {d:.3g} (> {tol:.3g}); "
                    "if that is float rounding of a deep model (ONNX Runtime's kernels), raise --check-atol"
                )
            diff = max(diff, d)
    return diff


def load_exported(output_dir: str, map_location=None) -> Tuple[Callable, Dict]:
    """``(graph, model.json contents)`` of an export directory; ``graph(clip)`` runs the model
    (for ONNX, in ONNX Runtime on the CPU, or CUDA where ``map_location`` is a CUDA device)."""
    meta_path = os.path.join(output_dir, "model.json")
    if not os.path.isfile(meta_path):
        raise FileNotFoundError(f"{meta_path}: not an EVAD export directory (no model.json)")
    with open(meta_path) as f:
        info = json.load(f)
    return _load_graph(os.path.join(output_dir, info["file"]), info["format"], map_location), info
