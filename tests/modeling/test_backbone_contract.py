"""EVAD checks the backbone contract (evad_d2/modeling/backbone/contract.py), not the class: it
trains and infers on a small stand-in backbone, and names what a backbone lacks."""
import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.structures import Boxes, Instances
from torch import nn

from evad_d2.config import get_evad_cfg
from evad_d2.engine import build_optimizer
from evad_d2.modeling import EVAD
from evad_d2.modeling.backbone.contract import BackboneOutput
from evad_d2.modeling.heads import build_action_head, build_localization_head
from evad_d2.modeling.losses import SetCriterion
from evad_d2.testing import TINY_CONFIG

LEVELS = (2, 3, 4, 5)  # MODEL.EVAD.LOC.IN_FEATURES p2..p5


class StandInBackbone(nn.Module):
    """Not a ViTSimpleFPN: a tubelet convolution for the tokens (stride 16, as the action head's
    RoIAlign expects) and one strided convolution per level on the middle frame for the maps."""

    size_divisibility = 32

    def __init__(self, dim: int, channels: int):
        super().__init__()
        self.patch = nn.Conv3d(3, dim, (2, 16, 16), stride=(2, 16, 16))
        self.levels = nn.ModuleDict({f"p{k}": nn.Conv2d(3, channels, 2**k, stride=2**k) for k in LEVELS})
        self.channels = channels
        self.keep_rates = [1.0, 1.0]
        self.num_layers = 2

    def output_shape(self):
        return {f"p{k}": ShapeSpec(channels=self.channels, stride=2**k) for k in LEVELS}

    def set_keep_rates(self, keep_rates):
        self.keep_rates = [float(r) for r in keep_rates]

    def layer_id(self, name):
        return 0 if name.startswith("patch.") else None

    def forward(self, x):
        b, _, t, h, w = x.shape
        tokens = self.patch(x).flatten(2).transpose(1, 2)  # (B, N, dim) in (t, h, w) order
        index = torch.arange(tokens.shape[1]).expand(b, -1)
        keyframe = x[:, :, t // 2]
        features = {name: conv(keyframe) for name, conv in self.levels.items()}
        return BackboneOutput(features, tokens, index, (t // 2, h // 16, w // 16))


def evad_on(backbone, cfg):
    return EVAD(
        backbone=backbone,
        localization_head=build_localization_head(cfg, backbone.output_shape()),
        action_head=build_action_head(cfg),
        criterion=SetCriterion(cfg),
        pixel_mean=cfg.MODEL.PIXEL_MEAN,
        pixel_std=cfg.MODEL.PIXEL_STD,
        score_thresh=0.0,
    )


def test_evad_trains_and_infers_on_a_stand_in_backbone():
    # Zero-initialised box deltas: the first boxes are the whole-image proposals, which stay on the clip.
    opts = ["SOLVER.BACKBONE_MULTIPLIER", 0.1, "MODEL.EVAD.LOC.ZERO_INIT_BOX_DELTAS", True]
    cfg = get_evad_cfg(TINY_CONFIG, opts, freeze=False)
    torch.manual_seed(0)
    backbone = StandInBackbone(cfg.MODEL.EVAD.EMBED_DIM, cfg.MODEL.FPN.OUT_CHANNELS)
    model = evad_on(backbone, cfg)
    clip = torch.rand(3, 8, 64, 96) * 255
    gt = Instances((64, 96))
    gt.gt_boxes = Boxes(torch.tensor([[10.0, 5.0, 50.0, 60.0]]))
    gt.gt_actions = torch.eye(cfg.MODEL.EVAD.NUM_ACTION_CLASSES)[1:2]

    optimizer = build_optimizer(cfg, model)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    # Layer decay asks the backbone: its layer-0 parameter gets the multiplier, the rest base lr.
    assert lr_of[id(backbone.patch.weight)] == pytest.approx(cfg.SOLVER.BASE_LR * 0.1 * cfg.SOLVER.LAYER_DECAY**3)
    assert lr_of[id(backbone.levels["p2"].weight)] == pytest.approx(cfg.SOLVER.BASE_LR)
    model.train()
    losses = model([{"clip": clip, "instances": gt}])
    assert "loss_action" in losses and all(torch.isfinite(v) for v in losses.values())
    before = backbone.patch.weight.detach().clone()
    sum(losses.values()).backward()
    optimizer.step()
    assert not torch.equal(backbone.patch.weight, before)  # the action loss reaches the tokens

    model.eval()
    model.set_keep_rates([1.0, 0.5])
    assert backbone.keep_rates == [1.0, 0.5]
    with torch.no_grad():
        (out,) = model([{"clip": clip, "height": 128, "width": 192}])
    inst = out["instances"]
    assert inst.image_size == (128, 192)
    assert inst.pred_action_scores.shape == (len(inst), cfg.MODEL.EVAD.NUM_ACTION_CLASSES) and len(inst) > 0


class LacksKeepRatesAndLayerIds(nn.Module):
    """A detectron2-style backbone without keep-rate control and lr-decay layer ids."""

    size_divisibility = 32
    keep_rates = [1.0]
    num_layers = 1
    output_shape = StandInBackbone.output_shape
    channels = 32


def test_a_backbone_missing_a_piece_is_named():
    cfg = get_evad_cfg(TINY_CONFIG, freeze=False)
    backbone = LacksKeepRatesAndLayerIds()
    with pytest.raises(TypeError, match=r"LacksKeepRatesAndLayerIds .*lacks set_keep_rates, layer_id\. .*contract\.py"):
        evad_on(backbone, cfg)


class ReturnsADict(StandInBackbone):
    def forward(self, x):
        return super().forward(x).features


def test_a_backbone_returning_a_dict_is_named():
    cfg = get_evad_cfg(TINY_CONFIG, freeze=False)
    model = evad_on(ReturnsADict(cfg.MODEL.EVAD.EMBED_DIM, cfg.MODEL.FPN.OUT_CHANNELS), cfg).eval()
    with pytest.raises(TypeError, match="ReturnsADict returned dict, not a BackboneOutput"):
        model([{"clip": torch.rand(3, 8, 64, 96) * 255}])
