"""The backbone contract: what EVAD's heads, the optimizer and the tools need from a backbone.

EVAD accepts any backbone that meets :class:`EVADBackbone` (checked by :func:`check_backbone`,
not by class); :class:`~evad_d2.modeling.backbone.ViTSimpleFPN` (pruning ViT + simple FPN) is the
built-in one. A backbone is a ``detectron2.modeling.Backbone`` (``size_divisibility``,
``output_shape()``) whose forward returns a :class:`BackboneOutput` instead of a dict, plus
keep-rate control and the layer ids of layer-wise lr decay.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Protocol, Sequence, Tuple

from detectron2.layers import ShapeSpec
from torch import Tensor

__all__ = ["BackboneOutput", "EVADBackbone", "check_backbone"]


@dataclass
class BackboneOutput:
    """What a backbone returns for a (B, 3, T, H, W) clip batch.

    Attributes:
        features: keyframe feature maps by name (the names and shapes of ``output_shape()``),
            each (B, C_l, H / s_l, W / s_l); the localization head pools from them.
        tokens: (B, M, D) encoder tokens that survived pruning (after the final norm),
            keyframe tokens first; the action head classifies from them.
        token_index: (B, M) long, flat position of each token in the ``token_grid``.
        token_grid: (T', H', W') token grid of the (padded) clip, Python ints.
    """

    features: Dict[str, Tensor]
    tokens: Tensor
    token_index: Tensor
    token_grid: Tuple[int, int, int]


class EVADBackbone(Protocol):
    """The backbone interface EVAD relies on (a ``typing.Protocol``: no base class needed).

    ``keep_rates`` and the layer ids refer to the backbone's L encoder layers: layer id 0 is the
    input embedding, ``i + 1`` encoder layer ``i``, ``L + 1`` what follows the last layer (e.g. the
    final norm); layer-wise lr decay scales a parameter's lr by ``decay ** (L + 1 - id)``.
    """

    #: Multiple that the padded clip height and width must be.
    size_divisibility: int
    #: One keep rate in (0, 1] per encoder layer (1: no pruning there).
    keep_rates: List[float]
    #: Number L of encoder layers.
    num_layers: int

    def output_shape(self) -> Dict[str, ShapeSpec]:
        """Channels and stride of each map of :attr:`BackboneOutput.features`."""

    def __call__(self, clips: Tensor) -> BackboneOutput:
        """Run on (B, 3, T, H, W) normalised, padded clips."""

    def set_keep_rates(self, keep_rates: Sequence[float]) -> None:
        """Change the per-layer keep rates (at inference, without retraining); raises on a
        list of the wrong length or rates outside (0, 1]."""

    def layer_id(self, name: str) -> Optional[int]:
        """Layer id (0 .. L + 1) of the parameter ``name`` (relative to the backbone), or None for
        parameters outside the encoder (e.g. a neck), which get the base lr."""


# The members check_backbone looks for (a Protocol's annotations and methods, in order).
_CONTRACT = ("size_divisibility", "keep_rates", "num_layers", "output_shape", "set_keep_rates", "layer_id")


def check_backbone(backbone) -> None:
    """Raise a TypeError naming every member of :class:`EVADBackbone` that ``backbone`` lacks."""
    missing = [m for m in _CONTRACT if not hasattr(backbone, m)]
    missing += [m for m in ("output_shape", "set_keep_rates", "layer_id") if m not in missing and not callable(getattr(backbone, m))]
    if not callable(backbone):
        missing.append("__call__")
    if missing:
        cls = type(backbone)
        raise TypeError(
            f"EVAD's backbone {cls.__module__}.{cls.__qualname__} (MODEL.BACKBONE.NAME when built from a config) "
            f"does not meet the backbone contract: it lacks {', '.join(missing)}. Implement them as documented "
            "by EVADBackbone in evad_d2/modeling/backbone/contract.py (its forward returns a BackboneOutput)."
        )
