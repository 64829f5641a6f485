"""The keyframe-centric token-pruning ViT: pruning math, token bookkeeping, equivalences."""
import math

import pytest
import torch
import torch.nn.functional as F

from evad_d2.modeling.backbone import PruningVideoViT, restore_token_map
from evad_d2.modeling.backbone.attention import PruningAttention
from evad_d2.modeling.backbone.pos_embed import resize_pos_table, sinusoid_table
from evad_d2.modeling.backbone.pruning import (
    importance_by_recompute,
    importance_from_attention,
    importance_from_logsumexp,
    keyframe_first_order,
    num_kept_tokens,
)

TINY = dict(embed_dim=32, depth=6, num_heads=4, patch_size=16, tubelet_size=2, pretrain_img_size=64, pretrain_num_frames=8)
PRUNE = [1.0, 0.7, 1.0, 0.5, 0.8, 1.0]


def tiny_vit(**kw):
    torch.manual_seed(0)
    args = dict(TINY, feature_layers=(1, 3, 5))
    args.update(kw)
    return PruningVideoViT(**args).eval()


def reference_vit_forward(vit, clip):
    """A plain VideoMAE forward written out independently: no pruning, explicit attention."""
    x = vit.patch_embed.proj(clip).flatten(2).transpose(1, 2)
    grid = vit.token_grid(clip.shape)
    x = x + vit.position_embedding(grid)
    for blk in vit.blocks:
        a = blk.attn
        h = blk.norm1(x)
        b, n, c = h.shape
        qkv = F.linear(h, a.qkv.weight, torch.cat([a.q_bias, torch.zeros_like(a.v_bias), a.v_bias]))
        q, k, v = qkv.reshape(b, n, 3, a.num_heads, -1).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        x = x + a.proj((attn @ v).transpose(1, 2).reshape(b, n, c))
        x = x + blk.mlp.fc2(F.gelu(blk.mlp.fc1(blk.norm2(x))))
    return vit.norm(x)  # (B, N, C) in (t, h, w) order


def test_keep_rate_one_is_the_plain_vit():
    vit = tiny_vit()
    clip = torch.randn(2, 3, 8, 64, 96)
    with torch.no_grad():
        out = vit(clip)
        ref = reference_vit_forward(vit, clip)
    n = ref.shape[1]
    assert out["tokens"].shape == (2, n, 32)
    # Every token present once; put back into grid order and compare.
    assert torch.equal(out["token_index"].sort(dim=1).values, torch.arange(n).expand(2, -1))
    restored = torch.gather(out["tokens"], 1, out["token_index"].argsort(dim=1).unsqueeze(-1).expand(-1, -1, 32))
    torch.testing.assert_close(restored, ref, atol=1e-5, rtol=1e-5)


def test_token_counts_vit_b_grid_at_rho_07():
    keep = [1, 1, 1, 0.7, 1, 1, 0.7, 1, 1, 0.7, 1, 1]
    vit = PruningVideoViT(embed_dim=16, depth=12, num_heads=2, keep_rates=keep, feature_layers=(2, 5, 8, 11)).eval()
    clip = torch.randn(1, 3, 16, 224, 224)
    counts = []
    for blk in vit.blocks:  # record the tokens leaving each block
        blk.register_forward_hook(lambda m, i, o: counts.append(o[0].shape[1]))
    with torch.no_grad():
        out = vit(clip)
    assert counts == vit.token_counts(clip.shape)
    assert [counts[0], counts[3], counts[6], counts[9]] == [1568, 1098, 769, 539]
    kf_positions = torch.arange(4 * 196, 5 * 196)  # keyframe = frame 8 -> token slice 4
    assert set(kf_positions.tolist()) <= set(out["token_index"][0].tolist())
    assert torch.equal(out["token_index"][0, :196], kf_positions)
    assert out["token_index"][0].unique().numel() == 539


def test_num_kept_tokens_is_exact_ceil():
    assert [num_kept_tokens(n, 0.7) for n in (1568, 1098, 769)] == [1098, 769, 539]
    assert num_kept_tokens(1000, 0.7) == 700  # 0.7 * 1000 is 700.0000000000001 in floats
    assert [num_kept_tokens(n, 0.6) for n in (1568, 941, 565)] == [941, 565, 339]
    with pytest.raises(ValueError):
        num_kept_tokens(10, 0.0)


def brute_force_importance(attn, n1, w_kf):
    """Eq. 3 with explicit loops: I_j = 1/N sum_i w_i * mean_h attn(i, j)."""
    b, h, n, _ = attn.shape
    out = torch.zeros(b, n - n1, dtype=torch.float64)
    for bi in range(b):
        mean_h = attn[bi].double().mean(0)
        for j in range(n1, n):
            s = 0.0
            for i in range(n):
                s += (w_kf if i < n1 else 1.0) * mean_h[i, j].item()
            out[bi, j - n1] = s / n
    return out


@pytest.mark.parametrize("w_kf", [1.0, 4.0])
def test_importance_formula_and_implementations_agree(w_kf):
    torch.manual_seed(1)
    b, h, n, d, n1 = 2, 3, 24, 8, 6
    q, k = torch.randn(b, h, n, d), torch.randn(b, h, n, d)
    attn = torch.softmax(q @ k.transpose(-2, -1) * d**-0.5, dim=-1)
    ref = brute_force_importance(attn, n1, w_kf).float()
    torch.testing.assert_close(importance_from_attention(attn, n1, w_kf), ref, atol=1e-6, rtol=1e-5)
    lse = torch.logsumexp(q @ k.transpose(-2, -1) * d**-0.5, dim=-1)
    torch.testing.assert_close(importance_from_logsumexp(q, k, lse, n1, w_kf, chunk=5), ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(importance_by_recompute(q, k, n1, w_kf, chunk=7), ref, atol=1e-6, rtol=1e-5)
    # w_kf changes the ranking in general: keyframe rows count w_kf times.
    if w_kf != 1.0:
        assert not torch.allclose(ref, brute_force_importance(attn, n1, 1.0).float())


@pytest.mark.parametrize("impl", ["explicit", "logsumexp", "recompute"])
def test_attention_impls_match_fused_output(impl):
    torch.manual_seed(2)
    attn = PruningAttention(32, 4, importance_impl=impl).eval()
    torch.nn.init.normal_(attn.q_bias)
    torch.nn.init.normal_(attn.v_bias)
    x = torch.randn(2, 30, 32)
    with torch.no_grad():
        plain, none = attn(x)
        out, imp = attn(x, num_keyframe=10, keyframe_weight=3.0)
        _, imp_ref = PruningAttention.forward(_with_impl(attn, "explicit"), x, num_keyframe=10, keyframe_weight=3.0)
    assert none is None and imp.shape == (2, 20)
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(imp, imp_ref, atol=1e-6, rtol=1e-5)


def _with_impl(attn, impl):
    attn.importance_impl = impl
    return attn


@pytest.mark.parametrize("w_kf", [1.0, 6.0])
def test_kept_set_matches_brute_force_reference(w_kf):
    """A pruning block keeps the keyframe tokens plus the top non-keyframe tokens of eq. 3."""
    vit = tiny_vit(keep_rates=[0.6, 1, 1, 1, 1, 1], keyframe_weight=w_kf)
    clip = torch.randn(2, 3, 8, 64, 64)
    captured = {}
    blk = vit.blocks[0]
    # Hooks must return None (a returned value would replace the inputs/outputs).
    blk.register_forward_pre_hook(lambda m, args: captured.update(x=args[0]))
    blk.register_forward_hook(lambda m, args, out: captured.update(out=out))
    with torch.no_grad():
        vit(clip)
        x = captured["x"]
        a = blk.attn
        h = blk.norm1(x)
        qkv = F.linear(h, a.qkv.weight, torch.cat([a.q_bias, torch.zeros_like(a.v_bias), a.v_bias]))
        q, k, _ = qkv.reshape(2, x.shape[1], 3, a.num_heads, -1).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    n1, n = 16, x.shape[1]  # 4x4 keyframe tokens of a 4x4x4 grid
    ref = brute_force_importance(attn, n1, w_kf)
    keep = num_kept_tokens(n, 0.6)
    index_out = captured["out"][1]
    order = keyframe_first_order((4, 4, 4), 2)
    for bi in range(2):
        ref_top = set((ref[bi].argsort(descending=True)[: keep - n1] + n1).tolist())
        expected = set(order[:n1].tolist()) | {order[j].item() for j in ref_top}
        assert set(index_out[bi].tolist()) == expected
        assert index_out[bi].shape[0] == keep


def test_restore_puts_every_token_back():
    torch.manual_seed(3)
    grid = (3, 4, 5)
    n = 60
    index = torch.stack([torch.randperm(n)[:25], torch.randperm(n)[:25]])
    tokens = torch.randn(2, 25, 7)
    fill = torch.full((7,), -9.0)
    for f in (None, fill):
        fmap = restore_token_map(tokens, index, grid, fill=f)
        assert fmap.shape == (2, 7, 3, 4, 5)
        for b in range(2):
            for m in range(25):
                t, rem = divmod(index[b, m].item(), 20)
                y, x = divmod(rem, 5)
                assert torch.equal(fmap[b, :, t, y, x], tokens[b, m])
            dropped = torch.ones(n, dtype=torch.bool)
            dropped[index[b]] = False
            flat = fmap[b].reshape(7, n)[:, dropped]
            assert torch.all(flat == (0.0 if f is None else -9.0))


def test_restore_round_trip_through_the_backbone():
    vit = tiny_vit(keep_rates=PRUNE)
    clip = torch.randn(1, 3, 8, 64, 96)
    with torch.no_grad():
        out = vit(clip)
    fmap = restore_token_map(out["tokens"], out["token_index"], vit.token_grid(clip.shape))
    flat = fmap.flatten(2).transpose(1, 2)[0]  # (N, C) in grid order
    torch.testing.assert_close(flat[out["token_index"][0]], out["tokens"][0])
    assert (flat.abs().sum(-1) == 0).sum() == 4 * 4 * 6 - out["tokens"].shape[1]


def test_batch_and_non_square_match_per_sample_runs():
    vit = tiny_vit(keep_rates=PRUNE, keyframe_weight=2.0)
    clip = torch.randn(3, 3, 8, 48, 80)
    with torch.no_grad():
        out = vit(clip)
        for b in range(3):
            single = vit(clip[b : b + 1])
            torch.testing.assert_close(out["tokens"][b : b + 1], single["tokens"], atol=1e-5, rtol=1e-5)
            assert torch.equal(out["token_index"][b : b + 1], single["token_index"])
            torch.testing.assert_close(out["layer5"][b : b + 1], single["layer5"], atol=1e-5, rtol=1e-5)
    assert out["layer1"].shape == (3, 32, 3, 5)
    assert out["tokens"].shape[1] == vit.token_counts(clip.shape)[-1]


def test_keep_rates_change_at_inference_without_retraining():
    vit = tiny_vit()
    clip = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        full = vit(clip)["tokens"].shape[1]
        vit.set_keep_rates(PRUNE)
        pruned = vit(clip)["tokens"].shape[1]
    assert full == 64 and pruned == vit.token_counts(clip.shape)[-1] < 64
    with pytest.raises(ValueError, match="one keep rate per encoder block"):
        vit.set_keep_rates([0.5])
    with pytest.raises(ValueError, match=r"outside \(0, 1\]"):
        vit.set_keep_rates([1, 1, 1, 1.5, 1, 1])


def test_gradients_reach_every_parameter_and_checkpointing_agrees():
    torch.manual_seed(4)
    clip = torch.randn(2, 3, 8, 64, 64)
    grads = []
    for use_ckpt in (False, True):
        vit = tiny_vit(keep_rates=PRUNE, learnable_pos_embed=True, use_checkpoint=use_ckpt).train()
        out = vit(clip)
        loss = out["tokens"].pow(2).mean() + sum(out[f].mean() for f in vit._out_features)
        loss.backward()
        missing = [n for n, p in vit.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert not missing
        grads.append({n: p.grad.clone() for n, p in vit.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, atol=1e-5, rtol=1e-4)


def test_bad_inputs_raise_clear_errors():
    vit = tiny_vit()
    with pytest.raises(ValueError, match="multiples of 16"):
        vit(torch.randn(1, 3, 8, 60, 64))
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        vit(torch.randn(3, 8, 64, 64))
    with pytest.raises(ValueError, match="keep_rates needs one keep rate per encoder block"):
        PruningVideoViT(**TINY, keep_rates=[0.7])
    with pytest.raises(ValueError, match="keyframe index 9 outside a clip of 8 frames"):
        tiny_vit(keyframe_frame=9)(torch.randn(1, 3, 8, 64, 64))


def test_sinusoid_table_and_resizing():
    table = sinusoid_table(10, 6)
    p, c = 7, 3  # odd channel: cosine with rate 10000^(2*(3//2)/6)
    assert table[p, c].item() == pytest.approx(math.cos(p / 10000 ** (2 / 6)), abs=1e-6)
    assert table[p, 4].item() == pytest.approx(math.sin(p / 10000 ** (4 / 6)), abs=1e-6)
    big = sinusoid_table(2 * 4 * 4, 8)
    assert resize_pos_table(big, (2, 4, 4), (2, 4, 4)) is big
    resized = resize_pos_table(big, (2, 4, 4), (3, 6, 8))
    assert resized.shape == (3 * 6 * 8, 8)
    # Space: a constant table stays constant; time: the first/last slices map to the originals.
    const = torch.ones(2 * 4 * 4, 8)
    torch.testing.assert_close(resize_pos_table(const, (2, 4, 4), (2, 5, 7)), torch.ones(70, 8))
    same_space = resize_pos_table(big, (2, 4, 4), (4, 4, 4)).reshape(4, 16, 8)
    torch.testing.assert_close(same_space[0], big.reshape(2, 16, 8)[0])
    torch.testing.assert_close(same_space[-1], big.reshape(2, 16, 8)[1])
