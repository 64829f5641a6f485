"""Action heads: the context refinement decoder and the linear baseline."""
import math

import pytest
import torch
from detectron2.config import get_cfg

from evad_d2.config import add_evad_config
from evad_d2.modeling.backbone.pos_embed import sinusoid_table
from evad_d2.modeling.backbone.pruning import keyframe_first_order
from evad_d2.modeling.heads import (
    ACTION_HEAD_REGISTRY,
    ACTION_HEAD_SHORT_NAMES,
    ContextRefinementHead,
    LinearActionHead,
    build_action_head,
)
from evad_d2.modeling.heads.action import official_token_positions

TINY = dict(
    in_dim=16, dim=8, depth=2, num_heads=2, num_classes=5, cls_hidden_dim=12, pretrain_token_grid=(4, 4),
)
GRID = (2, 4, 6)  # (T', H', W') for a 64 x 96 clip; keyframe slice 1, 24 keyframe tokens
IMAGE_SIZES = torch.tensor([[64, 96], [60, 90]])


def num_params(module):
    return sum(p.numel() for p in module.parameters())


def pruned_tokens(batch=2, keep_nonkey=10, dim=16, seed=0):
    """Keyframe tokens first (raster order), then ``keep_nonkey`` other tokens in shuffled order."""
    g = torch.Generator().manual_seed(seed)
    order = keyframe_first_order(GRID, keyframe_slice=1)
    n1 = GRID[1] * GRID[2]
    index = []
    for _ in range(batch):
        rest = order[n1:][torch.randperm(len(order) - n1, generator=g)[:keep_nonkey]]
        index.append(torch.cat([order[:n1], rest]))
    index = torch.stack(index)
    return torch.randn(batch, index.shape[1], dim, generator=g), index


def boxes(batch=2):
    return torch.tensor([[8.0, 4.0, 40.0, 60.0], [50.0, 10.0, 90.0, 55.0], [0.0, 0.0, 95.0, 63.0]]).expand(batch, 3, 4)


def test_default_sizes_match_official_counts():
    with torch.device("meta"):
        head = ContextRefinementHead()
        linear = LinearActionHead()
    assert num_params(head) == 16_666_464
    assert len(head.classifiers) == 6
    assert all(num_params(c) == 954_448 for c in head.classifiers)
    assert num_params(linear) == 768 * 80 + 80


def test_decoder_forward_shapes_and_gradients():
    torch.manual_seed(0)
    head = ContextRefinementHead(**TINY)
    tokens, index = pruned_tokens()
    tokens.requires_grad_(True)
    logits = head(tokens, index, GRID, boxes(), IMAGE_SIZES)
    assert len(logits) == 2
    assert all(x.shape == (2, 3, 5) and torch.isfinite(x).all() for x in logits)
    sum(x.sum() for x in logits).backward()
    missing = [n for n, p in head.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing
    assert tokens.grad.abs().sum() > 0


def test_position_table_is_videomae_sinusoid_and_resized_for_other_grids():
    head = ContextRefinementHead(**TINY)
    table = head.position_table((2, 4, 4))  # the pretraining grid: no resizing
    torch.testing.assert_close(table, sinusoid_table(32, 8))
    assert table[0, 0] == 0 and table[0, 1] == 1  # sin(0), cos(0)
    torch.testing.assert_close(table[5, :2], torch.tensor([math.sin(5.0), math.cos(5.0)]))
    resized = head.position_table(GRID)
    assert resized.shape == (2 * 4 * 6, 8)
    # Rows keep the table's values (bicubic in space only); time slices are not mixed.
    assert not torch.allclose(resized[:24], resized[24:])


def test_permuting_tokens_with_their_positions_changes_nothing():
    torch.manual_seed(0)
    head = ContextRefinementHead(**TINY).eval()
    tokens, index = pruned_tokens()
    perm = torch.cat([torch.arange(24), 24 + torch.randperm(10)])
    a = head(tokens, index, GRID, boxes(), IMAGE_SIZES)[-1]
    b = head(tokens[:, perm], index[:, perm], GRID, boxes(), IMAGE_SIZES)[-1]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_official_token_positions_sorts_only_non_keyframe_positions():
    index = torch.tensor([[7, 8, 9, 30, 2, 11], [7, 8, 9, 1, 2, 3]])
    out = official_token_positions(index, num_keyframe=3)
    assert out.tolist() == [[7, 8, 9, 2, 11, 30], [7, 8, 9, 1, 2, 3]]


def test_official_token_order_differs_only_when_tokens_are_not_ascending():
    torch.manual_seed(0)
    ours = ContextRefinementHead(**TINY).eval()
    official = ContextRefinementHead(**dict(TINY, official_token_order=True)).eval()
    official.load_state_dict(ours.state_dict())
    tokens, index = pruned_tokens()
    n1 = 24
    ascending = torch.cat([index[:, :n1], index[:, n1:].sort(dim=1).values], dim=1)
    args = (GRID, boxes(), IMAGE_SIZES)
    for a, b in zip(ours(tokens, ascending, *args), official(tokens, ascending, *args)):
        torch.testing.assert_close(a, b)
    # Shuffled (top-k order): the official placement puts tokens at wrong positions.
    assert not torch.equal(index, ascending)
    diff = (ours(tokens, index, *args)[-1] - official(tokens, index, *args)[-1]).abs().max()
    assert diff > 1e-3
    # It equals our head fed with the wrongly placed positions.
    wrong = official_token_positions(index, n1)
    torch.testing.assert_close(official(tokens, index, *args)[-1], ours(tokens, wrong, *args)[-1])


def test_decoder_actor_features_use_mask_token_and_extended_boxes():
    torch.manual_seed(0)
    head = ContextRefinementHead(**TINY).eval()
    tokens, index = pruned_tokens(batch=1)
    out = head(tokens, index, GRID, boxes(1), IMAGE_SIZES[:1])[-1]
    with torch.no_grad():
        head.mask_token.add_(1.0)
    assert not torch.allclose(out, head(tokens, index, GRID, boxes(1), IMAGE_SIZES[:1])[-1])
    with torch.no_grad():
        head.mask_token.sub_(1.0)
    head.pooler.roi_extend = (0.0, 0.0)
    assert not torch.allclose(out, head(tokens, index, GRID, boxes(1), IMAGE_SIZES[:1])[-1])


def test_linear_head_by_hand():
    # Channel 0 of every token is 1 in slice 0 and 3 in slice 1; the classifier copies the channels.
    head = LinearActionHead(in_dim=2, num_classes=2)
    with torch.no_grad():
        head.action_logits.weight.copy_(torch.eye(2))
        head.action_logits.bias.zero_()
    grid = (2, 4, 4)
    index = keyframe_first_order(grid, 1)[None]  # all 32 tokens, keyframe (slice 1) first
    tokens = torch.zeros(1, 32, 2)
    tokens[0, :16, 0] = 3.0
    tokens[0, 16:, 0] = 1.0
    box = torch.tensor([[[10.0, 10.0, 50.0, 50.0]]])
    size = torch.tensor([[64, 64]])
    out = head(tokens, index, grid, box, size)
    assert len(out) == 1 and out[0].shape == (1, 1, 2)
    torch.testing.assert_close(out[0], torch.tensor([[[2.0, 0.0]]]))  # mean of 1 and 3
    # Dropping slice 0 leaves zeros there: (0 + 3) / 2.
    out = head(tokens[:, :16], index[:, :16], grid, box, size)
    torch.testing.assert_close(out[0], torch.tensor([[[1.5, 0.0]]]))


def test_zero_boxes_and_bad_inputs():
    head = ContextRefinementHead(**TINY)
    tokens, index = pruned_tokens()
    logits = head(tokens, index, GRID, torch.zeros(2, 0, 4), IMAGE_SIZES)
    assert logits[-1].shape == (2, 0, 5)
    with pytest.raises(ValueError, match="token_index"):
        head(tokens, index[:, :-1], GRID, boxes(), IMAGE_SIZES)
    with pytest.raises(ValueError, match="image_sizes"):
        head(tokens, index, GRID, boxes(), IMAGE_SIZES[:1])


def test_build_from_config():
    cfg = get_cfg()
    add_evad_config(cfg)
    cfg.MODEL.EVAD.NUM_ACTION_CLASSES = 3
    cfg.MODEL.EVAD.DECODER.DEPTH = 1
    cfg.MODEL.EVAD.DECODER.OFFICIAL_TOKEN_ORDER = True
    head = build_action_head(cfg)
    assert isinstance(head, ContextRefinementHead)
    assert len(head.blocks) == 1 and head.official_token_order
    assert head.classifiers[0].action_logits.out_features == 3
    assert head.pretrain_token_grid == (14, 14) and head.pooler.roi_extend == (0.4, 0.2)
    cfg.MODEL.EVAD.ACTION_HEAD = "linear"
    linear = build_action_head(cfg)
    assert isinstance(linear, LinearActionHead) and linear.action_logits.out_features == 3
    cfg.MODEL.EVAD.ACTION_HEAD = "woo"
    with pytest.raises(ValueError, match="ACTION_HEAD"):
        build_action_head(cfg)


def test_each_action_head_pools_with_its_own_keys():
    cfg = get_cfg()
    add_evad_config(cfg)
    cfg.MODEL.EVAD.DECODER.ROI_EXTEND = (0.0, 0.0)
    cfg.MODEL.EVAD.DECODER.POOLER_RESOLUTION = 5
    cfg.MODEL.EVAD.LINEAR_HEAD.POOLER_SAMPLING_RATIO = 1
    cfg.MODEL.EVAD.PATCH_SIZE = 8
    crd = build_action_head(cfg).pooler
    assert (crd.roi_extend, crd.output_size, crd.sampling_ratio, crd.stride) == ((0.0, 0.0), 5, 2, 8)
    cfg.MODEL.EVAD.ACTION_HEAD = "linear"
    linear = build_action_head(cfg).pooler  # MODEL.EVAD.LINEAR_HEAD.*, not the decoder's keys
    assert (linear.roi_extend, linear.output_size, linear.sampling_ratio, linear.stride) == ((0.4, 0.2), 7, 1, 8)


def test_built_in_action_heads_are_registered_under_their_class_and_config_names():
    assert ACTION_HEAD_REGISTRY.get("ContextRefinementHead") is ContextRefinementHead
    assert ACTION_HEAD_REGISTRY.get("LinearActionHead") is LinearActionHead
    assert ACTION_HEAD_SHORT_NAMES == {"decoder": "ContextRefinementHead", "linear": "LinearActionHead"}
    cfg = add_evad_config(get_cfg())
    cfg.MODEL.EVAD.DECODER.DEPTH = 1
    for name, cls in [("decoder", ContextRefinementHead), ("linear", LinearActionHead),
                      ("ContextRefinementHead", ContextRefinementHead), ("LinearActionHead", LinearActionHead)]:
        cfg.MODEL.EVAD.ACTION_HEAD = name
        assert type(build_action_head(cfg)) is cls, name
    cfg.MODEL.EVAD.ACTION_HEAD = "woo"
    with pytest.raises(ValueError) as err:
        build_action_head(cfg)
    assert str(err.value) == (
        "MODEL.EVAD.ACTION_HEAD = 'woo' is neither one of ['decoder', 'linear'] nor a name in "
        "ACTION_HEAD_REGISTRY ['ContextRefinementHead', 'LinearActionHead']"
    )


def official_style_decoder(head, tokens, index, grid, boxes, image_sizes):
    """The official head's remapping written out (mask assignment, per-frame ROIPooler)."""
    from detectron2.modeling.poolers import ROIPooler
    from detectron2.structures import Boxes

    x_vis = head.encoder_to_decoder(tokens)
    b, _, c = x_vis.shape
    t, h, w = grid
    s = h * w
    kstart, kend = s * (t // 2), s * (t // 2 + 1)
    pos = head.position_table(grid)[None].expand(b, -1, -1)
    nonkey = index[:, s:]
    nonkey = torch.where(nonkey >= kend, nonkey - s, nonkey)  # position among non-keyframe tokens
    mask = torch.ones(b, t * s - s, dtype=torch.bool)
    mask.scatter_(1, nonkey, False)
    x_others = torch.zeros(b, t * s - s, c)
    x_others[~mask] = x_vis[:, s:].reshape(-1, c)
    x_others[mask] = head.mask_token.reshape(-1, c)
    x_full = torch.cat([x_others[:, :kstart], x_vis[:, :s], x_others[:, kstart:]], dim=1) + pos
    vis_pos = torch.cat([pos[:, :kstart], pos[:, kend:]], dim=1)[~mask].reshape(b, -1, c)
    x_vis = x_vis + torch.cat([pos[:, kstart:kend], vis_pos], dim=1)

    ext = []
    for bx, (ih, iw) in zip(boxes, image_sizes.tolist()):
        x1, y1, x2, y2 = bx.split(1, dim=-1)
        pw, ph = 0.4 * (x2 - x1 + 1) / 2, 0.2 * (y2 - y1 + 1) / 2
        e = torch.cat([x1 - pw, y1 - ph, x2 + pw, y2 + ph], dim=-1)
        e[:, [0, 2]] = e[:, [0, 2]].clamp(0, iw - 1)
        e[:, [1, 3]] = e[:, [1, 3]].clamp(0, ih - 1)
        ext.append(Boxes(e))
    pooler = ROIPooler(7, [1 / 16], 2, "ROIAlignV2")
    po = x_full.reshape(b, t, h, w, c).permute(0, 4, 1, 2, 3)
    rois = torch.stack([pooler([po[:, :, f]], ext) for f in range(t)], dim=2)
    rois = rois.amax(dim=(3, 4)).mean(dim=2).view(b, boxes.shape[1], c)
    x = torch.cat([x_vis, rois], dim=1)
    out = []
    for block, classifier in zip(head.blocks, head.classifiers):
        x = block(x)
        out.append(classifier(x[:, -boxes.shape[1]:]))
    return out


def test_official_token_order_reproduces_official_remapping():
    torch.manual_seed(0)
    head = ContextRefinementHead(**dict(TINY, official_token_order=True)).eval()
    with torch.no_grad():
        head.mask_token.normal_()
    tokens, index = pruned_tokens()
    with torch.no_grad():
        ours = head(tokens, index, GRID, boxes(), IMAGE_SIZES)
        ref = official_style_decoder(head, tokens, index, GRID, boxes(), IMAGE_SIZES)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
