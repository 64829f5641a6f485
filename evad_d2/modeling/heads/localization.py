"""Query-based actor localization head (paper 3.3 and appendix B, after Sparse R-CNN).

``n`` learnable proposal boxes and features are refined by a cascade of dynamic instance interaction
stages on the keyframe FPN maps; every stage predicts a person/no-object score and refined boxes.
"""
import copy
import math
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import Boxes
from detectron2.utils.registry import Registry
from torch import Tensor, nn
from torchvision.ops import box_convert

__all__ = [
    "LOCALIZATION_HEAD_REGISTRY",
    "DynamicConv",
    "LocalizationHead",
    "LocalizationStage",
    "build_localization_head",
]

LOCALIZATION_HEAD_REGISTRY = Registry("LOCALIZATION_HEAD")
LOCALIZATION_HEAD_REGISTRY.__doc__ = """
Registry for actor localization heads, which predict person boxes on the keyframe from the neck's
feature maps.

The head named by ``MODEL.EVAD.LOC.NAME`` is built with ``obj(cfg, input_shape)``, where
``input_shape`` is the backbone's ``output_shape()`` (Dict[str, ShapeSpec], e.g. p2..p6), and is
called as ``head(features, image_sizes)`` with

* features: the backbone's maps by name, each (B, C, H_l, W_l) (keyframe features;
  ``BackboneOutput.features``, see ``modeling/backbone/contract.py``);
* image_sizes: (B, 2) float unpadded (h, w) of each clip.

It must return ``(outputs, proposal_features)``: ``outputs`` a non-empty list with one dict per
stage, the final stage last, each with "pred_logits" (B, n, 2) [person, no-object] logits and
"pred_boxes" (B, n, 4) absolute XYXY boxes; ``proposal_features`` (B, n, D) of the last stage
(EVAD does not use them).
"""

# detectron2's clamp for exp() of width/height deltas.
_SCALE_CLAMP = math.log(1e5 / 16)


class DynamicConv(nn.Module):
    """Dynamic instance interaction: two 1x1 "convolutions" whose weights come from the proposal
    feature, applied to that proposal's RoI features, then a projection of the whole RoI to one vector.
    """

    def __init__(self, hidden_dim: int, dim_dynamic: int, num_dynamic: int, pooler_resolution: int):
        super().__init__()
        if num_dynamic != 2:
            # The two generated matrices (in -> dynamic, dynamic -> in) are the published design.
            raise ValueError(f"DynamicConv supports num_dynamic=2 only, got {num_dynamic}")
        self.hidden_dim = hidden_dim
        self.dim_dynamic = dim_dynamic
        self.num_params = hidden_dim * dim_dynamic
        self.dynamic_layer = nn.Linear(hidden_dim, num_dynamic * self.num_params)
        self.norm1 = nn.LayerNorm(dim_dynamic)
        self.norm2 = nn.LayerNorm(hidden_dim)
        self.out_layer = nn.Linear(hidden_dim * pooler_resolution**2, hidden_dim)
        self.norm3 = nn.LayerNorm(hidden_dim)

    def forward(self, pro_features: Tensor, roi_features: Tensor) -> Tensor:
        """
        Args:
            pro_features: (N, hidden_dim), one row per proposal (all clips flattened).
            roi_features: (N, S*S, hidden_dim) pooled RoI features of those proposals.

        Returns:
            (N, hidden_dim)
        """
        params = self.dynamic_layer(pro_features)
        param1 = params[:, : self.num_params].view(-1, self.hidden_dim, self.dim_dynamic)
        param2 = params[:, self.num_params :].view(-1, self.dim_dynamic, self.hidden_dim)
        x = F.relu(self.norm1(torch.bmm(roi_features, param1)))
        x = F.relu(self.norm2(torch.bmm(x, param2)))
        return F.relu(self.norm3(self.out_layer(x.flatten(1))))


class LocalizationStage(nn.Module):
    """One Sparse R-CNN stage: proposal self-attention, dynamic interaction, FFN, class and box heads."""

    def __init__(
        self,
        *,
        hidden_dim: int,
        num_heads: int,
        dim_feedforward: int,
        dim_dynamic: int,
        num_dynamic: int,
        dropout: float,
        pooler_resolution: int,
        bbox_weights: Sequence[float],
        num_cls_layers: int = 1,
        num_reg_layers: int = 3,
    ):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.self_attn = nn.MultiheadAttention(hidden_dim, num_heads, dropout=dropout, batch_first=True)
        self.inst_interact = DynamicConv(hidden_dim, dim_dynamic, num_dynamic, pooler_resolution)
        self.linear1 = nn.Linear(hidden_dim, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, hidden_dim)
        self.norm1 = nn.LayerNorm(hidden_dim)
        self.norm2 = nn.LayerNorm(hidden_dim)
        self.norm3 = nn.LayerNorm(hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.cls_module = self._tower(hidden_dim, num_cls_layers)
        self.reg_module = self._tower(hidden_dim, num_reg_layers)
        # Softmax over (person, no-object), as in WOO/EVAD, not Sparse R-CNN's sigmoid focal head.
        self.class_logits = nn.Linear(hidden_dim, 2)
        self.bboxes_delta = nn.Linear(hidden_dim, 4)
        if len(bbox_weights) != 4:
            raise ValueError(f"bbox_weights must have 4 values, got {bbox_weights!r}")
        self.bbox_weights = tuple(float(w) for w in bbox_weights)

    @staticmethod
    def _tower(dim: int, depth: int) -> nn.Sequential:
        layers = []
        for _ in range(depth):
            layers += [nn.Linear(dim, dim, bias=False), nn.LayerNorm(dim), nn.ReLU(inplace=True)]
        return nn.Sequential(*layers)

    def forward(
        self, roi_features: Tensor, pro_features: Tensor, boxes: Tensor
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """
        Args:
            roi_features: (B*n, C, S, S) RoIAlign output for ``boxes``.
            pro_features: (B, n, C) proposal features.
            boxes: (B, n, 4) absolute XYXY boxes the RoIs were pooled from.

        Returns:
            class logits (B, n, 2), refined boxes (B, n, 4), new proposal features (B, n, C).
        """
        batch, num, dim = pro_features.shape
        roi_features = roi_features.view(batch * num, dim, -1).transpose(1, 2)  # (B*n, S*S, C)

        attended = self.self_attn(pro_features, pro_features, pro_features, need_weights=False)[0]
        x = self.norm1(pro_features + self.dropout1(attended)).reshape(batch * num, dim)
        x = self.norm2(x + self.dropout2(self.inst_interact(x, roi_features)))
        x = self.norm3(x + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(x))))))

        class_logits = self.class_logits(self.cls_module(x))
        deltas = self.bboxes_delta(self.reg_module(x))
        pred_boxes = self.apply_deltas(deltas, boxes.reshape(-1, 4))
        return (
            class_logits.view(batch, num, -1),
            pred_boxes.view(batch, num, 4),
            x.view(batch, num, dim),
        )

    def apply_deltas(self, deltas: Tensor, boxes: Tensor) -> Tensor:
        """Apply (dx, dy, dw, dh) deltas, scaled down by ``bbox_weights``, to (N, 4) XYXY boxes."""
        boxes = boxes.to(deltas.dtype)
        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights
        wx, wy, ww, wh = self.bbox_weights
        dx = deltas[:, 0] / wx
        dy = deltas[:, 1] / wy
        dw = (deltas[:, 2] / ww).clamp(max=_SCALE_CLAMP)
        dh = (deltas[:, 3] / wh).clamp(max=_SCALE_CLAMP)
        pred_ctr_x = dx * widths + ctr_x
        pred_ctr_y = dy * heights + ctr_y
        pred_w = torch.exp(dw) * widths
        pred_h = torch.exp(dh) * heights
        return torch.stack(
            [
                pred_ctr_x - 0.5 * pred_w,
                pred_ctr_y - 0.5 * pred_h,
                pred_ctr_x + 0.5 * pred_w,
                pred_ctr_y + 0.5 * pred_h,
            ],
            dim=-1,
        )


def initial_proposal_boxes(num_proposals: int, kind: str = "image") -> Tensor:
    """(n, 4) normalised (cx, cy, w, h) initial proposals: the whole image, or a regular grid.

    The grid has ceil(sqrt(n)) columns and as many rows as needed; cells are filled row by row.
    """
    if kind == "image":
        return torch.tensor([0.5, 0.5, 1.0, 1.0]).repeat(num_proposals, 1)
    if kind == "grid":
        cols = math.ceil(math.sqrt(num_proposals))
        rows = math.ceil(num_proposals / cols)
        i = torch.arange(num_proposals)
        cx = (i % cols + 0.5) / cols
        cy = (i // cols + 0.5) / rows
        return torch.stack([cx, cy, torch.full_like(cx, 1.0 / cols), torch.full_like(cy, 1.0 / rows)], dim=1)
    raise ValueError(f"MODEL.EVAD.LOC.PROPOSAL_INIT must be 'image' or 'grid', got {kind!r}")


def _check_head_inputs(in_channels: int, hidden_dim: int, in_features: List[str], feature_strides: Dict[str, int]) -> None:
    if hidden_dim != in_channels:
        raise ValueError(
            f"LocalizationHead: hidden_dim ({hidden_dim}) must equal the feature channels "
            f"({in_channels}); see MODEL.EVAD.LOC.HIDDEN_DIM and MODEL.FPN.OUT_CHANNELS"
        )
    missing = [f for f in in_features if f not in feature_strides]
    if missing:
        raise ValueError(
            f"LocalizationHead: in_features {missing} not among the neck's outputs "
            f"{sorted(feature_strides)} (MODEL.EVAD.LOC.IN_FEATURES)"
        )


def _stage_cascade(stage: LocalizationStage, num_stages: int, zero_init_box_deltas: bool) -> nn.ModuleList:
    """``num_stages`` copies of ``stage`` with Xavier weight matrices (paper appendix A; biases keep
    their defaults), optionally with zero box regressors."""
    stages = nn.ModuleList([copy.deepcopy(stage) for _ in range(num_stages)])
    for p in stages.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
    if zero_init_box_deltas:
        for st in stages:
            nn.init.zeros_(st.bboxes_delta.weight)
            nn.init.zeros_(st.bboxes_delta.bias)
    return stages


@LOCALIZATION_HEAD_REGISTRY.register()
class LocalizationHead(nn.Module):
    """Sparse R-CNN head with learnable proposals, pooling from the keyframe FPN levels.

    Owns the proposals: ``init_proposal_features`` (n, hidden_dim) and ``init_proposal_boxes``
    (n, 4), normalised (cx, cy, w, h), initialised to the whole image.
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int = 256,
        feature_strides: Dict[str, int],
        in_features: List[str],
        num_proposals: int = 100,
        hidden_dim: int = 256,
        num_stages: int = 6,
        num_heads: int = 8,
        dim_feedforward: int = 2048,
        dim_dynamic: int = 64,
        num_dynamic: int = 2,
        dropout: float = 0.0,
        pooler_resolution: int = 7,
        sampling_ratio: int = 2,
        bbox_weights: Sequence[float] = (2.0, 2.0, 1.0, 1.0),
        proposal_init: str = "image",
        zero_init_box_deltas: bool = False,
    ):
        """
        Args:
            in_channels: channels of every pooled feature map (the FPN width).
            feature_strides: stride of each feature map by name (the neck's ``output_shape()``).
            in_features: names of the levels to pool from, finest first (p2..p5).
            num_proposals: number of learnable proposals n.
            hidden_dim: proposal feature width; must equal ``in_channels`` (the dynamic convolution
                mixes proposal and RoI features channel by channel).
            num_stages: number of refinement stages.
            num_heads: heads of the proposal self-attention.
            dim_feedforward: FFN width.
            dim_dynamic, num_dynamic: width and number of the dynamic layers.
            dropout: dropout inside the stages.
            pooler_resolution, sampling_ratio: ROIAlignV2 parameters.
            bbox_weights: weights of the (dx, dy, dw, dh) deltas.
            proposal_init: initial proposal boxes, as ablated by Sparse R-CNN: "image" (every box
                the whole image; the default of Sparse R-CNN, WOO and EVAD) or "grid" (boxes tiling
                the image on a regular grid, which converges faster on small actors).
            zero_init_box_deltas: start every stage's box regressor at zero, so the first boxes
                are the proposals themselves instead of random jumps (Xavier deltas can move all
                boxes off the image at the start); off by default (the paper's Xavier init).
        """
        super().__init__()
        _check_head_inputs(in_channels, hidden_dim, in_features, feature_strides)
        self.in_features = list(in_features)
        self.num_proposals = num_proposals
        self.hidden_dim = hidden_dim
        self.pooler = ROIPooler(
            output_size=pooler_resolution,
            scales=tuple(1.0 / feature_strides[f] for f in self.in_features),
            sampling_ratio=sampling_ratio,
            pooler_type="ROIAlignV2",
        )
        stage = LocalizationStage(
            hidden_dim=hidden_dim,
            num_heads=num_heads,
            dim_feedforward=dim_feedforward,
            dim_dynamic=dim_dynamic,
            num_dynamic=num_dynamic,
            dropout=dropout,
            pooler_resolution=pooler_resolution,
            bbox_weights=bbox_weights,
        )
        self.stages = _stage_cascade(stage, num_stages, zero_init_box_deltas)

        self.init_proposal_features = nn.Embedding(num_proposals, hidden_dim)
        self.init_proposal_boxes = nn.Embedding(num_proposals, 4)
        with torch.no_grad():
            self.init_proposal_boxes.weight.copy_(initial_proposal_boxes(num_proposals, proposal_init))

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        loc = cfg.MODEL.EVAD.LOC
        in_features = list(loc.IN_FEATURES)
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.EVAD.LOC.IN_FEATURES {missing} are not outputs of the backbone "
                f"({sorted(input_shape)})"
            )
        channels = {input_shape[f].channels for f in in_features}
        if channels != {cfg.MODEL.FPN.OUT_CHANNELS}:
            raise ValueError(
                f"MODEL.FPN.OUT_CHANNELS={cfg.MODEL.FPN.OUT_CHANNELS} but the pooled levels have "
                f"channels {sorted(channels)}"
            )
        return {
            "in_channels": cfg.MODEL.FPN.OUT_CHANNELS,
            "feature_strides": {f: input_shape[f].stride for f in in_features},
            "in_features": in_features,
            "num_proposals": loc.NUM_PROPOSALS,
            "hidden_dim": loc.HIDDEN_DIM,
            "num_stages": loc.NUM_STAGES,
            "num_heads": loc.NUM_HEADS,
            "dim_feedforward": loc.DIM_FEEDFORWARD,
            "dim_dynamic": loc.DIM_DYNAMIC,
            "num_dynamic": loc.NUM_DYNAMIC,
            "dropout": loc.DROPOUT,
            "pooler_resolution": loc.POOLER_RESOLUTION,
            "sampling_ratio": loc.POOLER_SAMPLING_RATIO,
            "bbox_weights": tuple(loc.BBOX_WEIGHTS),
            "proposal_init": loc.PROPOSAL_INIT,
            "zero_init_box_deltas": loc.ZERO_INIT_BOX_DELTAS,
        }

    def initial_boxes(self, image_sizes: Tensor) -> Tensor:
        """The learnable proposals as absolute XYXY boxes, (B, n, 4), for (B, 2) (h, w) image sizes."""
        boxes = box_convert(self.init_proposal_boxes.weight, "cxcywh", "xyxy")
        whwh = image_sizes.to(boxes.dtype).flip(-1).repeat(1, 2)  # (B, 4) = (w, h, w, h)
        return boxes[None] * whwh[:, None, :]

    def forward(
        self, features: Dict[str, Tensor], image_sizes: Tensor
    ) -> Tuple[List[Dict[str, Tensor]], Tensor]:
        """
        Args:
            features: FPN maps by name, each (B, C, H_l, W_l); ``in_features`` are used.
            image_sizes: (B, 2) unpadded (h, w) of each clip; proposals span this area.

        Returns:
            One dict per stage with "pred_logits" (B, n, 2) [person, no-object] logits and
            "pred_boxes" (B, n, 4) absolute XYXY boxes; and the last stage's proposal features
            (B, n, hidden_dim).
        """
        maps = [features[f] for f in self.in_features]
        batch = maps[0].shape[0]
        if image_sizes.shape != (batch, 2):
            raise ValueError(f"image_sizes must be ({batch}, 2), got {tuple(image_sizes.shape)}")
        boxes = self.initial_boxes(image_sizes.to(maps[0].device))
        pro_features = self.init_proposal_features.weight[None].expand(batch, -1, -1)

        outputs = []
        for stage in self.stages:
            roi_features = self.pooler(maps, [Boxes(b) for b in boxes])
            logits, pred_boxes, pro_features = stage(roi_features, pro_features, boxes)
            outputs.append({"pred_logits": logits, "pred_boxes": pred_boxes})
            # Each stage learns a refinement of the previous boxes, not of the whole cascade.
            boxes = pred_boxes.detach()
        return outputs, pro_features


def build_localization_head(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """The localization head named by ``MODEL.EVAD.LOC.NAME`` in :data:`LOCALIZATION_HEAD_REGISTRY`.

    Args:
        input_shape: the backbone's ``output_shape()``.
    """
    name = cfg.MODEL.EVAD.LOC.NAME
    if name not in LOCALIZATION_HEAD_REGISTRY:
        registered = sorted(n for n, _ in LOCALIZATION_HEAD_REGISTRY)
        raise ValueError(f"MODEL.EVAD.LOC.NAME = {name!r} is not a name in LOCALIZATION_HEAD_REGISTRY {registered}")
    return LOCALIZATION_HEAD_REGISTRY.get(name)(cfg, input_shape)
