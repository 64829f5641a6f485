"""Sparse R-CNN localization head: sizes, box arithmetic, gradients, config."""
import math

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec

from evad_d2.config import add_evad_config
from evad_d2.modeling.heads import LOCALIZATION_HEAD_REGISTRY, LocalizationHead, build_localization_head

STRIDES = {"p2": 4, "p3": 8, "p4": 16, "p5": 32}
LEVELS = ["p2", "p3", "p4", "p5"]
TINY = dict(
    in_channels=16, hidden_dim=16, feature_strides=STRIDES, in_features=LEVELS, num_proposals=5,
    num_stages=2, num_heads=4, dim_feedforward=24, dim_dynamic=4, pooler_resolution=3,
)


def num_params(module):
    return sum(p.numel() for p in module.parameters())


def tiny_features(batch=2, height=64, width=96, channels=16):
    g = torch.Generator().manual_seed(0)
    return {
        name: torch.randn(batch, channels, height // s, width // s, generator=g) for name, s in STRIDES.items()
    }


def test_default_sizes_match_official_counts():
    with torch.device("meta"):
        head = LocalizationHead(feature_strides=STRIDES, in_features=LEVELS)
    assert len(head.stages) == 6
    for stage in head.stages:
        assert num_params(stage) == 13_215_366
    proposals = num_params(head.init_proposal_boxes) + num_params(head.init_proposal_features)
    assert proposals == 26_000
    assert num_params(head) == 6 * 13_215_366 + 26_000


def test_initial_proposals_cover_the_whole_unpadded_image():
    torch.manual_seed(0)
    head = LocalizationHead(**TINY)
    boxes = head.initial_boxes(torch.tensor([[64, 96], [48, 80]]))
    assert boxes.shape == (2, 5, 4)
    torch.testing.assert_close(boxes[0], torch.tensor([[0.0, 0.0, 96.0, 64.0]]).expand(5, 4))
    torch.testing.assert_close(boxes[1], torch.tensor([[0.0, 0.0, 80.0, 48.0]]).expand(5, 4))


def test_apply_deltas_by_hand():
    torch.manual_seed(0)
    stage = LocalizationHead(**TINY).stages[0]
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]])  # w 20, h 40, centre (20, 40)
    torch.testing.assert_close(stage.apply_deltas(torch.zeros(1, 4), boxes), boxes)
    # dx = 2 / wx(2) = 1 width right; dy = -1 / 2 = half a height up; dw = log 2 doubles the width.
    out = stage.apply_deltas(torch.tensor([[2.0, -1.0, math.log(2.0), 0.0]]), boxes)
    torch.testing.assert_close(out, torch.tensor([[20.0, 0.0, 60.0, 40.0]]))
    # Huge dw/dh are clamped at log(1e5 / 16).
    out = stage.apply_deltas(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), boxes)
    torch.testing.assert_close(out[0, 2] - out[0, 0], torch.tensor(20.0 * 1e5 / 16))


def test_forward_shapes_finite_and_every_parameter_gets_gradient():
    torch.manual_seed(0)
    head = LocalizationHead(**TINY)
    sizes = torch.tensor([[64, 96], [50, 70]])
    outputs, features = head(tiny_features(), sizes)
    assert len(outputs) == 2
    for out in outputs:
        assert out["pred_logits"].shape == (2, 5, 2)
        assert out["pred_boxes"].shape == (2, 5, 4)
        assert torch.isfinite(out["pred_logits"]).all() and torch.isfinite(out["pred_boxes"]).all()
    assert features.shape == (2, 5, 16)
    loss = sum(o["pred_logits"].sum() + o["pred_boxes"].sum() for o in outputs) + features.sum()
    loss.backward()
    missing = [n for n, p in head.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_boxes_are_detached_between_stages():
    torch.manual_seed(0)
    head = LocalizationHead(**TINY)
    outputs, _ = head(tiny_features(), torch.tensor([[64, 96], [64, 96]]))
    outputs[-1]["pred_boxes"].sum().backward()
    # The last stage refines detached boxes, so its boxes do not depend on the initial boxes
    # (RoIAlign gives no gradient to box coordinates), only on proposal features.
    assert head.init_proposal_boxes.weight.grad is None
    assert head.init_proposal_features.weight.grad.abs().sum() > 0


def test_from_config_reads_loc_keys_and_checks_channels():
    cfg = get_cfg()
    add_evad_config(cfg)
    cfg.MODEL.EVAD.LOC.NUM_PROPOSALS = 7
    cfg.MODEL.EVAD.LOC.NUM_STAGES = 1
    cfg.MODEL.EVAD.LOC.DIM_FEEDFORWARD = 32
    shapes = {n: ShapeSpec(channels=256, stride=s) for n, s in STRIDES.items()}
    shapes["p6"] = ShapeSpec(channels=256, stride=64)
    head = LocalizationHead(cfg, shapes)
    assert head.num_proposals == 7 and len(head.stages) == 1
    assert head.in_features == LEVELS
    assert head.stages[0].linear1.out_features == 32

    cfg.MODEL.FPN.OUT_CHANNELS = 128
    with pytest.raises(ValueError, match="OUT_CHANNELS"):
        LocalizationHead(cfg, shapes)
    cfg.MODEL.FPN.OUT_CHANNELS = 256
    cfg.MODEL.EVAD.LOC.IN_FEATURES = ["p2", "res4"]
    with pytest.raises(ValueError, match="IN_FEATURES"):
        LocalizationHead(cfg, shapes)


def test_localization_head_is_built_from_its_registry():
    assert LOCALIZATION_HEAD_REGISTRY.get("LocalizationHead") is LocalizationHead
    cfg = add_evad_config(get_cfg())
    assert cfg.MODEL.EVAD.LOC.NAME == "LocalizationHead"
    cfg.MODEL.EVAD.LOC.NUM_STAGES = 1
    shapes = {n: ShapeSpec(channels=256, stride=s) for n, s in STRIDES.items()}
    head = build_localization_head(cfg, shapes)
    assert type(head) is LocalizationHead and len(head.stages) == 1
    cfg.MODEL.EVAD.LOC.NAME = "SparseRCNNHead"
    with pytest.raises(ValueError) as err:
        build_localization_head(cfg, shapes)
    assert str(err.value) == (
        "MODEL.EVAD.LOC.NAME = 'SparseRCNNHead' is not a name in LOCALIZATION_HEAD_REGISTRY ['LocalizationHead']"
    )


def test_hidden_dim_must_match_channels():
    with pytest.raises(ValueError, match="HIDDEN_DIM"):
        LocalizationHead(**dict(TINY, hidden_dim=32))


def reference_stage(stage, roi_features, pro_features, boxes):
    """One stage written out in the official code's sequence-first layout."""
    n_clips, n_boxes, d = pro_features.shape
    roi = roi_features.view(n_clips * n_boxes, d, -1).permute(2, 0, 1)  # (S*S, B*n, d)
    pro = pro_features.permute(1, 0, 2)  # (n, B, d)
    attn = torch.nn.functional.multi_head_attention_forward(
        pro, pro, pro, d, stage.self_attn.num_heads, stage.self_attn.in_proj_weight,
        stage.self_attn.in_proj_bias, None, None, False, 0.0, stage.self_attn.out_proj.weight,
        stage.self_attn.out_proj.bias, training=False, need_weights=False,
    )[0]
    pro = stage.norm1(pro + attn)
    pro = pro.permute(1, 0, 2).reshape(1, n_clips * n_boxes, d)
    dyn = stage.inst_interact
    params = dyn.dynamic_layer(pro).permute(1, 0, 2)
    p1 = params[:, :, : dyn.num_params].view(-1, d, dyn.dim_dynamic)
    p2 = params[:, :, dyn.num_params :].view(-1, dyn.dim_dynamic, d)
    f = torch.relu(dyn.norm1(torch.bmm(roi.permute(1, 0, 2), p1)))
    f = torch.relu(dyn.norm2(torch.bmm(f, p2)))
    f = torch.relu(dyn.norm3(dyn.out_layer(f.flatten(1))))
    obj = stage.norm2(pro + f)
    obj = stage.norm3(obj + stage.linear2(torch.relu(stage.linear1(obj))))
    fc = obj.transpose(0, 1).reshape(n_clips * n_boxes, -1)
    logits = stage.class_logits(stage.cls_module(fc))
    deltas = stage.bboxes_delta(stage.reg_module(fc))
    return logits.view(n_clips, n_boxes, -1), stage.apply_deltas(deltas, boxes.view(-1, 4)).view(n_clips, n_boxes, 4)


def test_stage_matches_sequence_first_reference():
    torch.manual_seed(0)
    head = LocalizationHead(**TINY).eval()
    stage = head.stages[0]
    roi = torch.randn(2 * 5, 16, 3, 3)
    pro = torch.randn(2, 5, 16)
    boxes = torch.tensor([10.0, 5.0, 40.0, 50.0]).expand(2, 5, 4)
    logits, pred, _ = stage(roi, pro, boxes)
    ref_logits, ref_pred = reference_stage(stage, roi, pro, boxes)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pred, ref_pred, atol=1e-4, rtol=1e-5)


def test_initial_proposal_boxes_image_and_grid():
    from evad_d2.modeling.heads.localization import initial_proposal_boxes

    assert torch.equal(initial_proposal_boxes(3, "image"), torch.tensor([[0.5, 0.5, 1.0, 1.0]] * 3))
    grid = initial_proposal_boxes(16, "grid")  # 4 x 4 cells of 0.25 x 0.25
    assert torch.allclose(grid[0], torch.tensor([0.125, 0.125, 0.25, 0.25]))
    assert torch.allclose(grid[5], torch.tensor([0.375, 0.375, 0.25, 0.25]))
    assert torch.allclose(grid[15], torch.tensor([0.875, 0.875, 0.25, 0.25]))
    five = initial_proposal_boxes(5, "grid")  # 3 columns, 2 rows
    assert torch.allclose(five[:, 2], torch.full((5,), 1 / 3)) and torch.allclose(five[:, 3], torch.full((5,), 0.5))
    assert torch.allclose(five[4, :2], torch.tensor([0.5, 0.75]))
    with pytest.raises(ValueError, match="PROPOSAL_INIT"):
        initial_proposal_boxes(4, "random")


def test_zero_init_box_deltas_start_at_the_proposals():
    from evad_d2.modeling.heads.localization import LocalizationHead

    head = LocalizationHead(
        in_channels=16, feature_strides={"p2": 4}, in_features=["p2"], num_proposals=4, hidden_dim=16, num_stages=2,
        num_heads=2, dim_feedforward=32, dim_dynamic=4, proposal_init="grid", zero_init_box_deltas=True,
    )
    feats = {"p2": torch.randn(1, 16, 8, 12)}
    outs, _ = head(feats, torch.tensor([[32.0, 48.0]]))
    # 2 x 2 grid on a 48 x 32 image: the first proposal is [0, 0, 24, 16].
    for out in outs:
        assert torch.allclose(out["pred_boxes"][0, 0], torch.tensor([0.0, 0.0, 24.0, 16.0]), atol=1e-5)
