"""Tracking, box drawing, the token-pruning picture and the decoder-attention overlay."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from evad_d2.modeling.backbone.attention import PruningAttention
from evad_d2.modeling.backbone.pruning import num_kept_tokens
from evad_d2.testing import TINY_CONFIG as TINY, build_model_from_file, run_tool, write_video
from evad_d2.utils.pruning_vis import inspect_clip, render_decoder_attention, render_pruning_grid
from evad_d2.evaluation.ap import box_iou
from evad_d2.utils.tracking import IoUTracker
from evad_d2.utils.video_visualizer import PALETTE, color_for_id, draw_actors



# ---------------------------------------------------------------- tracking
def test_box_iou_hand_computed():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 5, 15, 15], [20, 20, 30, 30], [0, 0, 10, 10], [3, 3, 3, 8]])
    np.testing.assert_allclose(box_iou(a, b), [[25 / 175, 0.0, 1.0, 0.0]])


def test_tracker_keeps_ids_when_order_changes_and_starts_new_ones():
    tr = IoUTracker(iou_threshold=0.3, max_age=1)
    assert tr.update([[0, 0, 10, 10], [50, 50, 60, 60]]) == [0, 1]
    # Same people, listed in the other order and moved a little; a third appears.
    assert tr.update([[51, 50, 61, 60], [100, 0, 110, 10], [1, 0, 11, 10]]) == [1, 2, 0]
    # Person 0 is missed once (kept alive by max_age=1) ...
    assert tr.update([[52, 50, 62, 60], [100, 1, 110, 11]]) == [1, 2]
    assert tr.update([[2, 0, 12, 10], [53, 50, 63, 60]]) == [0, 1]
    # ... but after two misses its track has ended and the same place gets a new id.
    tr.update([[53, 50, 63, 60]])
    tr.update([[53, 50, 63, 60]])
    assert tr.update([[2, 0, 12, 10], [53, 50, 63, 60]]) == [3, 1]


def test_tracker_one_to_one_assignment_maximises_total_iou():
    tr = IoUTracker(iou_threshold=0.5)
    assert tr.update([[0, 0, 10, 10], [-2, 0, 8, 10]]) == [0, 1]
    # IoU(track 0, A) = 0.905 is the best single pair, but taking it leaves track 1 with B at
    # 0.48 < 0.5; the optimal one-to-one pairing is (0, B) = 0.739 and (1, A) = 0.6.
    assert tr.update([[0.5, 0, 10.5, 10], [1.5, 0, 11.5, 10]]) == [1, 0]
    assert tr.update([]) == []


# ---------------------------------------------------------------- drawing
def test_draw_actors_boxes_labels_and_stacking():
    img = np.full((120, 160, 3), 128, np.uint8)
    actors = [
        {"box": [40, 60, 100, 110], "person_score": 0.9, "actions": [("walk", 0.8)], "track_id": 3},
        {"box": [20, 40, 70, 90], "person_score": 0.7, "actions": [("jump", 0.5)]},
    ]
    out = draw_actors(img, actors, line_width=2)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (img == 128).all()  # the input is not modified
    c0, c1 = color_for_id(3), color_for_id(1)  # track id 3; the second actor has none: its position
    # Outline inside the box, on every edge below the label.
    for y in range(70, 110):
        assert tuple(out[y, 40]) == c0 and tuple(out[y, 41]) == c0 and tuple(out[y, 100]) == c0
    assert tuple(out[110, 70]) == c0 and tuple(out[109, 70]) == c0
    assert tuple(out[80, 38]) == (128, 128, 128) and tuple(out[80, 43]) == (128, 128, 128)
    # The first actor is drawn on top where outlines cross: the second's bottom edge (y=90) at x=40.
    assert tuple(out[89, 40]) == c0 and tuple(out[89, 60]) == c1
    # Labels: a filled box of the actor's colour above the first box's top-left corner.
    label = out[45:58, 41:60]
    assert (label == np.array(c0)).all(-1).mean() > 0.5 and not (label == np.array(c0)).all()


def test_palette_cycles():
    assert color_for_id(0) == PALETTE[0] and color_for_id(len(PALETTE) + 2) == PALETTE[2]


# ---------------------------------------------------------------- attention probabilities
def test_attention_probs_reproduce_the_layer_output():
    torch.manual_seed(0)
    attn = PruningAttention(32, 4)
    torch.nn.init.normal_(attn.q_bias)
    torch.nn.init.normal_(attn.v_bias)
    x = torch.randn(2, 11, 32)
    probs = attn.attention_probs(x)
    assert probs.shape == (2, 4, 11, 11)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 4, 11))
    # softmax(QK^T/sqrt(d)) V, then the projection: the layer's own (fused) output.
    v = torch.nn.functional.linear(x, attn.qkv.weight[64:], attn.v_bias).view(2, 11, 4, 8).transpose(1, 2)
    out = attn.proj((probs @ v).transpose(1, 2).reshape(2, 11, 32))
    torch.testing.assert_close(out, attn(x)[0], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- pruning and decoder pictures
@pytest.fixture(scope="module")
def tiny_model():
    return build_model_from_file(TINY)


@pytest.fixture(scope="module")
def inspected(tiny_model):
    torch.manual_seed(1)
    # 64 x 80 is not a multiple of 32 in width: the grid follows the padded size (divisibility 16).
    clip = torch.rand(3, 8, 64, 88) * 255
    inputs = {"clip": clip, "height": 64, "width": 88}
    return clip, inputs, inspect_clip(tiny_model, inputs)


def test_inspection_records_what_the_model_keeps(tiny_model, inspected):
    clip, inputs, ins = inspected
    t, h, w = ins.grid
    assert ins.grid == (4, 4, 6) and ins.keyframe_slice == 2 and ins.image_size == (64, 88)
    assert sorted(ins.kept) == [1, 3]  # KEEP_RATES [1, 0.7, 1, 0.7]
    n1 = num_kept_tokens(t * h * w, 0.7)
    assert [int(ins.kept[b].sum()) for b in (1, 3)] == [n1, num_kept_tokens(n1, 0.7)]
    for m in ins.kept.values():
        assert m[ins.keyframe_slice].all()  # keyframe tokens are never dropped
    assert not (ins.kept[3] & ~ins.kept[1]).any()  # a dropped token stays dropped
    # The last pruning block's survivors are the encoder's output tokens.
    with torch.no_grad():
        x = (clip - tiny_model.pixel_mean) / tiny_model.pixel_std
        x = torch.nn.functional.pad(x, (0, 96 - 88))
        ref = tiny_model.backbone.net(x[None])["token_index"][0].numpy()
    np.testing.assert_array_equal(ins.token_index, ref)
    assert set(np.flatnonzero(ins.kept[3].ravel())) == set(ref.tolist())
    # Person scores, boxes: one per proposal, boxes inside the clip.
    assert ins.person_scores.shape == (8,) and ins.proposal_boxes.shape == (8, 4)  # NUM_PROPOSALS
    assert (ins.proposal_boxes[:, 0::2] <= 88).all() and (ins.proposal_boxes[:, 1::2] <= 64).all()


def test_decoder_attention_matches_a_manual_computation(tiny_model, inspected):
    _, inputs, ins = inspected
    block = tiny_model.action_head.blocks[-1]
    seen = {}
    hook = block.register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0].detach()))
    try:
        with torch.no_grad():
            tiny_model([inputs])
    finally:
        hook.remove()
    a = block.attn
    heads, d = a.num_heads, a.head_dim
    with torch.no_grad():
        x = block.norm1(seen["x"])[0]
        q = (x @ a.qkv.weight[: heads * d].T + a.q_bias).view(-1, heads, d).transpose(0, 1)
        k = (x @ a.qkv.weight[heads * d : 2 * heads * d].T).view(-1, heads, d).transpose(0, 1)
        probs = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d), -1).mean(0)
    m = len(ins.token_index)
    np.testing.assert_allclose(ins.decoder_attention, probs[m:, :m].numpy(), rtol=1e-4, atol=1e-6)
    # attention_map: NaN where tokens were dropped, the actors' mean elsewhere.
    amap = ins.attention_map([0, 2])
    flat = amap.ravel()
    assert np.isnan(flat).sum() == flat.size - m
    np.testing.assert_allclose(flat[ins.token_index], ins.decoder_attention[[0, 2]].mean(0))
    with pytest.raises(ValueError, match="actor indices"):
        ins.attention_map(99)


def test_pruning_png_greys_exactly_the_dropped_tokens(inspected, tmp_path):
    clip, _, ins = inspected
    pad, alpha, grey = 3, 0.85, np.array([235, 235, 235], np.float32)
    path = tmp_path / "pruning.png"
    render_pruning_grid(clip, ins, pad=pad, dropped_alpha=alpha).save(path)
    png = np.asarray(Image.open(path).convert("RGB"))
    t, gh, gw = ins.grid
    ch, cw = gh * 16, gw * 16
    assert png.shape == (2 * ch + 3 * pad, t * cw + (t + 1) * pad, 3)
    frames = np.zeros((t, ch, cw, 3), np.float32)
    frames[:, :64, :88] = clip[:, ::2].round().permute(1, 2, 3, 0).numpy()
    for r, block in enumerate(sorted(ins.kept)):
        for j in range(t):
            y0, x0 = pad + r * (ch + pad), pad + j * (cw + pad)
            cell = png[y0 : y0 + ch, x0 : x0 + cw].astype(np.float32)
            for a in range(gh):
                for b in range(gw):
                    patch = cell[16 * a : 16 * a + 16, 16 * b : 16 * b + 16]
                    src = frames[j, 16 * a : 16 * a + 16, 16 * b : 16 * b + 16]
                    expected = src if ins.kept[block][j, a, b] else np.round(alpha * grey + (1 - alpha) * src)
                    np.testing.assert_allclose(patch, expected, atol=1.0)
    # With a label margin the picture only grows by it.
    labelled = render_pruning_grid(clip, ins, pad=pad, label_width=50)
    assert labelled.size == (png.shape[1] + 50, png.shape[0])


def test_decoder_attention_png(inspected, tmp_path):
    clip, _, ins = inspected
    path = tmp_path / "attn.png"
    actor = int(np.argmax(ins.person_scores))
    render_decoder_attention(clip, ins, actor, pad=2).save(path)
    png = np.asarray(Image.open(path).convert("RGB"))
    t, gh, gw = ins.grid
    ch, cw = gh * 16, gw * 16
    assert png.shape == (2 * ch + 3 * 2, t * cw + (t + 1) * 2, 3)
    amap = ins.attention_map(actor)
    for j in range(t):
        y0, x0 = 2 + ch + 2, 2 + j * (cw + 2)
        for a in range(gh):
            for b in range(gw):
                patch = png[y0 + 16 * a : y0 + 16 * a + 16, x0 + 16 * b : x0 + 16 * b + 16]
                if np.isnan(amap[j, a, b]):
                    assert (patch == 235).all()
                else:
                    assert not (patch == 235).all(-1).all()


def test_linear_head_has_no_decoder_attention():
    model = build_model_from_file(TINY, "MODEL.EVAD.ACTION_HEAD", "linear")
    ins = inspect_clip(model, {"clip": torch.rand(3, 8, 64, 64) * 255})
    assert ins.decoder_attention is None and sorted(ins.kept) == [1, 3]
    with pytest.raises(ValueError, match="no decoder"):
        ins.attention_map(0)


@pytest.mark.slow
def test_visualize_pruning_tool_writes_both_pictures(tmp_path):
    """tools/visualize_pruning.py end to end (a subprocess)."""

    def tool(*args):
        return run_tool("tools/visualize_pruning.py", *args).returncode

    video = tmp_path / "v.mp4"
    frames = []
    for i in range(40):
        img = np.full((64, 96, 3), 90, np.uint8)
        img[20:50, 2 * i % 80 : 2 * i % 80 + 12] = (200, 40, 40)
        frames.append(img)
    write_video(video, frames)
    out = tmp_path / "vis"
    assert tool("--config-file", TINY, "--input", video, "--time", "0.5", "--output-dir", out, "--scale", "2") == 0
    # 96 x 64 -> short side 64: 96 x 64, grid (4, 4, 6); cells 96 x 64 with 2 px gaps, doubled.
    assert Image.open(out / "pruning.png").size == (2 * (4 * 96 + 5 * 2), 2 * (2 * 64 + 3 * 2))
    assert Image.open(out / "decoder_attention.png").size == (2 * (4 * 96 + 5 * 2), 2 * (2 * 64 + 3 * 2))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    assert tool("--config-file", TINY, "--input", bad, "--output-dir", out) == 2
