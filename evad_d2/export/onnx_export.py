"""EVAD as an ONNX graph, boxes included, run with ONNX Runtime.

The graph is :class:`~evad_d2.export.exporter.ExportableEVAD` (one clip in; boxes, person scores
and action scores of its keyframe's actors out) translated by PyTorch's ``torch.export``-based
ONNX exporter (``torch.onnx.export(..., dynamo=True)``, which needs ``onnxscript``). As with the
TorchScript export, the clip size (T, H, W) and the keep rates are fixed (the token count of each
pruning layer is a constant), and the person threshold is applied inside the graph, so the number
of actors varies from clip to clip (data-dependent output length N).

The 3D RoIAlign of the action head becomes ONNX ``RoiAlign`` (one node per call: every temporal
slice is a batch entry of it) with ``coordinate_transformation_mode="half_pixel"``, which is
torchvision's ``aligned=True`` and needs opset 16 or later; the max over bins and the mean over
time are ``ReduceMax``/``ReduceMean``. Token pruning is ``TopK`` + ``GatherElements``, the
token-map restore ``ScatterElements``.

``onnx``, ``onnxruntime`` and ``onnxscript`` are optional dependencies (``pip install
'evad-d2[onnx]'``), imported only when ONNX is used.
"""
import contextlib
import importlib
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..utils.atomic_io import atomic_write

__all__ = [
    "MIN_ONNX_OPSET",
    "ONNX_OPSET",
    "OnnxRuntimeGraph",
    "check_onnx_exportable",
    "graph_opset",
    "onnx_program",
    "onnxruntime_providers",
    "require_onnx_package",
    "save_onnx",
]

# Default opset of the export (the torch.export-based exporter's own opset).
ONNX_OPSET = 18
# RoiAlign's coordinate_transformation_mode="half_pixel" (torchvision's aligned=True) exists from 16.
MIN_ONNX_OPSET = 16
INPUT_NAMES = ["clip"]
OUTPUT_NAMES = ["boxes", "scores", "action_scores"]


def require_onnx_package(name: str):
    """Import an optional ONNX package, or raise an ImportError that says how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ImportError(
            f"ONNX export needs the '{name}' package ({e}): pip install 'evad-d2[onnx]' "
            "(or: pip install onnx onnxruntime onnxscript)"
        ) from e


def check_onnx_exportable(model: nn.Module, opset: int) -> None:
    """Raise a ValueError naming the config key or option when ``model`` cannot become the ONNX
    graph that equals it.

    * ``opset`` below :data:`MIN_ONNX_OPSET` (``--opset``): RoiAlign lacks aligned boxes there.
    * ``MODEL.EVAD.PRUNING_SCORE`` "random": the eval stream of the random rule is torch's
      generator, which ONNX's RandomUniform cannot reproduce.
    """
    if int(opset) < MIN_ONNX_OPSET:
        raise ValueError(
            f"ONNX opset {opset} (--opset): RoiAlign has aligned (half-pixel) boxes, which EVAD's 3D "
            f"RoIAlign uses, only from opset {MIN_ONNX_OPSET}: use --opset {MIN_ONNX_OPSET} or more "
            f"(default {ONNX_OPSET})"
        )
    if any(getattr(m, "pruning_score", "attention") == "random" for m in model.modules()):
        raise ValueError(
            "MODEL.EVAD.PRUNING_SCORE 'random' cannot be exported to ONNX: the random rule draws from "
            "torch's seeded generator, which an ONNX graph cannot reproduce; export with "
            "MODEL.EVAD.PRUNING_SCORE attention"
        )


@contextlib.contextmanager
def _exportable_importance(model: nn.Module) -> Iterator[None]:
    """Pruning layers compute eq. 3 by recomputing softmax rows (``importance_impl="recompute"``)
    while exporting: the CPU "logsumexp" path calls a flash-attention kernel whose log-sum-exp
    output the ONNX exporter does not translate. The two are equal up to float rounding."""
    attns = [m for m in model.modules() if getattr(m, "importance_impl", None) in ("auto", "logsumexp")]
    saved = [a.importance_impl for a in attns]
    for a in attns:
        a.importance_impl = "recompute"
    try:
        yield
    finally:
        for a, impl in zip(attns, saved):
            a.importance_impl = impl


def onnx_program(wrapper: nn.Module, example: Tensor, opset: int = ONNX_OPSET):
    """The ``torch.onnx.ONNXProgram`` of ``wrapper`` (an ``ExportableEVAD``) for clips like
    ``example``; its ``model_proto`` is the ONNX model.

    Raises:
        ValueError: an unsupported setting (:func:`check_onnx_exportable`), or an opset the
            exporter could not convert the graph to (torch 2.14 writes opset 18 and its
            conversion to 16 or 17 fails on the Reduce* ops: it keeps 18, which is refused).
        ImportError: onnx or onnxscript is not installed.
    """
    check_onnx_exportable(wrapper, opset)
    require_onnx_package("onnx")
    require_onnx_package("onnxscript")
    with torch.no_grad(), _exportable_importance(wrapper):
        program = torch.onnx.export(
            wrapper, (example,), dynamo=True, opset_version=int(opset), input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES, verbose=False,
        )
    written = graph_opset(program.model_proto)
    if written != int(opset):
        raise ValueError(
            f"ONNX opset {opset} (--opset): torch.onnx could not convert EVAD's graph to opset {opset} "
            f"(it stays at opset {written}; see the warning above): use --opset {written}"
        )
    return program


def graph_opset(proto) -> int:
    """The default-domain (``ai.onnx``) opset an ONNX model proto declares."""
    return max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def save_onnx(program, path: str) -> None:
    """Write an ONNX program to ``path``: atomically as one file, or (over protobuf's 2 GiB limit,
    e.g. ViT-H) with its weights as external data beside it."""
    proto = program.model_proto
    if proto.ByteSize() < 2**31 - 1:
        with atomic_write(path, "wb") as f:
            f.write(proto.SerializeToString())
    else:
        program.save(path, external_data=True)


def onnxruntime_providers(device: Union[str, torch.device, None] = None) -> List[str]:
    """ONNX Runtime execution providers for ``device``: CUDA (then CPU as fallback) for a CUDA
    device when this onnxruntime has the CUDA provider, else CPU. ``None``: CUDA if available."""
    ort = require_onnx_package("onnxruntime")
    available = ort.get_available_providers()
    wants_cuda = device is None or torch.device(device).type == "cuda"
    if wants_cuda and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxRuntimeGraph:
    """An exported EVAD ONNX graph in an ONNX Runtime session, called like the other exports.

    Args:
        model: path of a ``model.onnx`` file, or its serialised bytes.
        providers: ONNX Runtime execution providers (default: :func:`onnxruntime_providers`).
        num_threads: intra-op threads of the session (0: ONNX Runtime's default).
    """

    def __init__(self, model: Union[str, bytes], providers: Optional[Sequence[str]] = None, num_threads: int = 0):
        ort = require_onnx_package("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(num_threads)
        self.session = ort.InferenceSession(model, options, providers=list(providers or onnxruntime_providers()))
        (inp,) = self.session.get_inputs()
        self.input_name = inp.name
        self.input_shape = [int(d) for d in inp.shape]

    @property
    def providers(self) -> List[str]:
        return self.session.get_providers()

    def __call__(self, clip: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """
        Args:
            clip: (3, T, H, W) float RGB in [0, 255], of the exported size (any device).

        Returns:
            boxes (N, 4), person scores (N,), action scores (N, C): float32 tensors on the clip's
            device (ONNX Runtime itself takes and returns host arrays here).
        """
        if list(clip.shape) != self.input_shape:
            raise ValueError(
                f"this EVAD ONNX graph was exported for clips of shape (C, T, H, W) = {self.input_shape} but got "
                f"{list(clip.shape)}: resize the frames to the exported size, or export again with --input-size"
            )
        array = clip.detach().to("cpu", torch.float32).contiguous().numpy()
        outputs = self.session.run(None, {self.input_name: array})
        return tuple(torch.from_numpy(o).to(clip.device) for o in outputs)
