"""Building the backbone from detectron2 configs, its size, and stock detectron2 heads on it."""
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone
from detectron2.modeling.proposal_generator import build_proposal_generator
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import EventStorage

from evad_d2 import add_evad_config
from evad_d2.modeling.backbone import PruningVideoViT, ViTSimpleFPN


def evad_cfg(**overrides):
    cfg = get_cfg()
    add_evad_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "ViTSimpleFPN"
    for k, v in overrides.items():
        node = cfg
        *path, last = k.split(".")
        for p in path:
            node = getattr(node, p)
        setattr(node, last, v)
    return cfg


def small_backbone_cfg():
    """A ViTSimpleFPN of width 32 and depth 4 on 64 px, 8-frame clips (config defaults otherwise)."""
    return evad_cfg(
        **{
            "MODEL.EVAD.EMBED_DIM": 32,
            "MODEL.EVAD.NUM_HEADS": 4,
            "MODEL.EVAD.DEPTH": 4,
            "MODEL.EVAD.KEEP_RATES": [1.0, 0.7, 1.0, 0.7],
            "MODEL.EVAD.FEATURE_LAYERS": [0, 1, 2, 3],
            "MODEL.EVAD.PRETRAIN_IMG_SIZE": 64,
            "MODEL.FPN.OUT_CHANNELS": 16,
            "INPUT.NUM_FRAMES": 8,
        }
    )


def test_vit_b_defaults_match_the_paper_and_official_sizes():
    cfg = evad_cfg()
    with torch.device("meta"):
        backbone = build_backbone(cfg)
    assert isinstance(backbone, ViTSimpleFPN) and isinstance(backbone.net, PruningVideoViT)
    vit_params = sum(p.numel() for p in backbone.net.parameters())
    fpn_params = sum(p.numel() for n, p in backbone.named_parameters() if not n.startswith("net."))
    assert abs(vit_params - 86.2e6) / 86.2e6 < 0.01
    assert vit_params == 86_227_200 and fpn_params == 3_147_776  # the official release's counts
    assert [i for i, r in enumerate(backbone.net.keep_rates) if r < 1] == [3, 6, 9]
    assert backbone.net.token_counts((16, 224, 224)) [9] == 539
    assert backbone.net.token_counts((16, 288, 384))[::3] == [3456, 2420, 1694, 1186]
    shapes = backbone.output_shape()
    assert {k: v.stride for k, v in shapes.items()} == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
    assert backbone.size_divisibility == 32


def test_vit_l_layout():
    cfg = evad_cfg(
        **{
            "MODEL.EVAD.EMBED_DIM": 1024,
            "MODEL.EVAD.DEPTH": 24,
            "MODEL.EVAD.NUM_HEADS": 16,
            "MODEL.EVAD.KEEP_RATES": [0.7 if i in (6, 12, 18) else 1.0 for i in range(24)],
            "MODEL.EVAD.FEATURE_LAYERS": [5, 11, 17, 23],
        }
    )
    with torch.device("meta"):
        backbone = build_backbone(cfg)
    params = sum(p.numel() for p in backbone.net.parameters())
    assert abs(params - 303.3e6) / 303.3e6 < 0.01  # VideoMAE ViT-L without classifier


def test_config_errors_name_the_key():
    cfg = evad_cfg(**{"MODEL.EVAD.KEEP_RATES": [0.7, 0.7]})
    with pytest.raises(ValueError, match="MODEL.EVAD.KEEP_RATES"):
        build_backbone(cfg)
    cfg = evad_cfg(**{"MODEL.EVAD.KEEP_RATES": [1.0] * 11 + [1.2]})
    with pytest.raises(ValueError, match=r"MODEL.EVAD.KEEP_RATES\[11\]"):
        build_backbone(cfg)


def test_pyramid_shapes_on_a_non_square_clip():
    backbone = build_backbone(small_backbone_cfg()).eval()
    clip = torch.randn(2, 3, 8, 64, 96)
    with torch.no_grad():
        feats = backbone(clip).features
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "p2": (2, 16, 16, 24),
        "p3": (2, 16, 8, 12),
        "p4": (2, 16, 4, 6),
        "p5": (2, 16, 2, 3),
        "p6": (2, 16, 1, 2),
    }


def test_simple_fpn_math_on_constant_maps():
    """With identity-like convs the top-down sum is checkable by hand."""
    backbone = build_backbone(small_backbone_cfg()).eval()
    for conv in backbone.lateral_convs + backbone.output_convs:
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    for i, conv in enumerate(backbone.lateral_convs):
        conv.weight.data[:, 0, 0, 0] = 1.0  # lateral_i = channel 0 of its input
        conv.bias.data.fill_(float(10**i))
    for conv in backbone.output_convs:
        conv.weight.data[torch.arange(16), torch.arange(16), 1, 1] = 1.0  # 3x3 identity
    maps = {f"layer{i}": torch.full((1, 32, 4, 4), float(i + 1)) for i in range(4)}
    feats = backbone.forward_features(maps)
    # p5 = lateral3 = 4 + 1000; p4 = lateral2 + p5 = (3 + 100) + 1004; ...
    assert feats["p5"].unique().tolist() == [1004.0]
    assert feats["p4"].unique().tolist() == [1004.0 + 103.0]
    assert feats["p3"].unique().tolist() == [1107.0 + 12.0]
    assert feats["p2"].unique().tolist() == [1119.0 + 2.0]
    assert feats["p2"].shape[-2:] == (16, 16) and feats["p6"].shape[-2:] == (1, 1)


def test_detectron2_rpn_runs_on_the_neck():
    cfg = small_backbone_cfg()
    cfg.MODEL.PROPOSAL_GENERATOR.NAME = "RPN"
    cfg.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[8], [16], [32], [64], [128]]
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 50
    backbone = build_backbone(cfg)
    rpn = build_proposal_generator(cfg, backbone.output_shape())
    clip = torch.randn(2, 3, 8, 64, 96)
    feats = backbone(clip).features
    images = ImageList(clip[:, :, 0], [(64, 96), (64, 96)])
    gt = []
    for box in ([10.0, 5.0, 40.0, 60.0], [50.0, 10.0, 90.0, 50.0]):
        inst = Instances((64, 96))
        inst.gt_boxes = Boxes(torch.tensor([box]))
        gt.append(inst)
    rpn.train()
    with EventStorage():  # the RPN logs its sampling statistics
        proposals, losses = rpn(images, feats, gt)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert backbone.net.patch_embed.proj.weight.grad is not None
    assert len(proposals) == 2 and proposals[0].proposal_boxes.tensor.shape[1] == 4
