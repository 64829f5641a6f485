"""Simple-FPN neck: multi-scale keyframe maps from a plain ViT (paper 3.3, localization branch).

The keyframe tokens of several encoder layers (ViT-B: outputs of layers 3, 6, 9, 12) are resized
by nearest interpolation to strides 4, 8, 16, 32 and fused by a standard FPN (1x1 laterals,
top-down nearest upsampling and sum, 3x3 outputs) plus a max-pooled stride-64 level.
"""
import math
from typing import Dict, List, Optional, Sequence

import fvcore.nn.weight_init as weight_init
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import Tensor

from .contract import BackboneOutput
from .vit import PruningVideoViT

__all__ = ["ViTSimpleFPN"]


@BACKBONE_REGISTRY.register()
class ViTSimpleFPN(Backbone):
    """The pruning ViT and its simple-FPN neck (pyramid ``p2``..``p6``): EVAD's built-in backbone,
    meeting the backbone contract (:class:`~evad_d2.modeling.backbone.contract.EVADBackbone`).

    ``forward(clip)`` returns a :class:`BackboneOutput`: the pyramid (``.features``, the maps
    stock detectron2 heads such as the RPN consume) and the ViT's surviving tokens. Keep rates and
    lr-decay layer ids are the ViT's; the neck's parameters are outside the layer decay.
    """

    @configurable
    def __init__(
        self,
        *,
        net: PruningVideoViT,
        in_features: Sequence[str],
        scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
        out_channels: int = 256,
        norm: str = "",
        top_block: bool = True,
        size_divisibility: int = 32,
    ):
        """
        Args:
            net: the ViT; its outputs ``in_features`` are keyframe maps at one stride.
            in_features: one ViT output per pyramid level, finest level first.
            scale_factors: resize factor of each input (4 -> stride 4 from stride 16).
            out_channels: FPN width.
            norm: detectron2 norm name for the convs ("" = none, as the official model).
            top_block: add ``p6`` by max-pooling ``p5`` (kernel 1, stride 2).
            size_divisibility: inputs are padded to this multiple (the coarsest level's stride).
        """
        super().__init__()
        if len(in_features) != len(scale_factors):
            raise ValueError(f"{len(in_features)} input features but {len(scale_factors)} scale factors")
        self.net = net
        self.in_features = list(in_features)
        self.scale_factors = [float(s) for s in scale_factors]
        in_shapes = net.output_shape()
        strides = []
        for f, s in zip(self.in_features, self.scale_factors):
            if f not in in_shapes:
                raise ValueError(f"{f} is not an output of the ViT (outputs: {sorted(in_shapes)})")
            stride = in_shapes[f].stride / s
            if stride != int(stride) or int(stride) & (int(stride) - 1):
                raise ValueError(f"scale factor {s} on {f} gives stride {stride}, not a power of 2")
            strides.append(int(stride))
        if strides != sorted(strides):
            raise ValueError(f"in_features must go from fine to coarse, got strides {strides}")

        use_bias = norm == ""
        self.lateral_convs, self.output_convs = [], []
        for f, stride in zip(self.in_features, strides):
            stage = int(math.log2(stride))
            lateral = Conv2d(in_shapes[f].channels, out_channels, 1, bias=use_bias, norm=get_norm(norm, out_channels))
            output = Conv2d(out_channels, out_channels, 3, padding=1, bias=use_bias, norm=get_norm(norm, out_channels))
            weight_init.c2_xavier_fill(lateral)
            weight_init.c2_xavier_fill(output)
            # detectron2's FPN names, so its tooling and checkpoints read naturally.
            self.add_module(f"fpn_lateral{stage}", lateral)
            self.add_module(f"fpn_output{stage}", output)
            self.lateral_convs.append(lateral)
            self.output_convs.append(output)
        self.top_block = top_block
        self._out_feature_strides = {f"p{int(math.log2(s))}": s for s in strides}
        if top_block:
            last = int(math.log2(strides[-1]))
            self._out_feature_strides[f"p{last + 1}"] = strides[-1] * 2
        self._out_features = list(self._out_feature_strides)
        self._out_feature_channels = {k: out_channels for k in self._out_features}
        self._size_divisibility = max(size_divisibility, strides[-1], net.size_divisibility)

    @classmethod
    def from_config(cls, cfg, input_shape: Optional[ShapeSpec] = None):
        net = PruningVideoViT(cfg, input_shape)
        return {
            "net": net,
            "in_features": net._out_features,
            "scale_factors": cfg.MODEL.EVAD.FEATURE_SCALES,
            "out_channels": cfg.MODEL.FPN.OUT_CHANNELS,
            "norm": cfg.MODEL.FPN.NORM,
            "top_block": True,
        }

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    @property
    def keep_rates(self) -> List[float]:
        """The ViT's keep rate per block."""
        return self.net.keep_rates

    def set_keep_rates(self, keep_rates: Sequence[float]) -> None:
        """Change the ViT's keep rates (one per block, in (0, 1])."""
        self.net.set_keep_rates(keep_rates)

    @property
    def num_layers(self) -> int:
        """Number of ViT blocks."""
        return self.net.num_layers

    def layer_id(self, name: str) -> Optional[int]:
        """The ViT's layer id of parameter ``net.<name>``; None for the neck's parameters."""
        return self.net.layer_id(name[len("net.") :]) if name.startswith("net.") else None

    def forward(self, x: Tensor) -> BackboneOutput:
        """
        Args:
            x: (B, 3, T, H, W) clip batch, H and W multiples of ``size_divisibility``.

        Returns:
            ``features`` ``{"p2": (B, C, H/4, W/4), ..., "p6": (B, C, H/64, W/64)}``, and the ViT's
            surviving ``tokens`` (B, M, D), their ``token_index`` (B, M) in the ``token_grid``
            (T/2, H/16, W/16).
        """
        net_outputs = self.net(x)
        return BackboneOutput(
            features=self.forward_features(net_outputs),
            tokens=net_outputs["tokens"],
            token_index=net_outputs["token_index"],
            token_grid=self.net.token_grid(x.shape),
        )

    def forward_features(self, net_outputs: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Build the pyramid from the ViT's outputs (keyframe maps)."""
        laterals: List[Tensor] = []
        for f, s, conv in zip(self.in_features, self.scale_factors, self.lateral_convs):
            feat = net_outputs[f]
            if s != 1.0:
                h, w = feat.shape[-2:]
                feat = F.interpolate(feat, size=(int(h * s), int(w * s)), mode="nearest")
            laterals.append(conv(feat))
        # Top-down: coarse to fine, each level adds the upsampled coarser one.
        results = [None] * len(laterals)
        prev = laterals[-1]
        results[-1] = self.output_convs[-1](prev)
        for i in range(len(laterals) - 2, -1, -1):
            prev = laterals[i] + F.interpolate(prev, size=laterals[i].shape[-2:], mode="nearest")
            results[i] = self.output_convs[i](prev)
        if self.top_block:
            results.append(F.max_pool2d(results[-1], kernel_size=1, stride=2))
        return dict(zip(self._out_features, results))
