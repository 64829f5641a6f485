"""MODEL.EVAD.PRUNING_SCORE: the paper's attention rule against random dropping (same counts,
same keyframe tokens, other non-keyframe tokens; repeatable in eval)."""

import pytest
import torch

from evad_d2 import get_evad_cfg
from evad_d2.config_check import ConfigValueError
from evad_d2.modeling.backbone import PruningVideoViT
from evad_d2.modeling.backbone.pruning import keyframe_first_order, random_scores, select_tokens
from evad_d2.testing import TINY_CONFIG

TINY = dict(embed_dim=32, depth=6, num_heads=4, patch_size=16, tubelet_size=2, pretrain_img_size=64,
            pretrain_num_frames=8, feature_layers=(1, 3, 5), keep_rates=[1.0, 0.7, 1.0, 0.5, 0.8, 1.0])
CLIP_SHAPE = (2, 3, 8, 64, 96)  # token grid (4, 4, 6): 96 tokens, 24 of the keyframe slice
GRID, N, N1 = (4, 4, 6), 96, 24
KEYFRAME_SLICE = 2  # the middle frame 4 (of 8) lies in tubelet 2


def vit(rule, **kw):
    torch.manual_seed(0)  # the same weights for both rules
    return PruningVideoViT(**dict(TINY, pruning_score=rule, **kw)).eval()


def block_indices(model, clip):
    """Token positions (B, N_i) leaving each block."""
    found = []
    hooks = [b.register_forward_hook(lambda m, i, out: found.append(out[1])) for b in model.blocks]
    try:
        with torch.no_grad():
            model(clip)
    finally:
        for h in hooks:
            h.remove()
    return found


def test_random_rule_keeps_the_counts_and_the_keyframe_tokens_of_the_attention_rule():
    clip = torch.randn(*CLIP_SHAPE, generator=torch.Generator().manual_seed(1))
    by_attention = block_indices(vit("attention"), clip)
    by_random = block_indices(vit("random"), clip)
    # Hand-computed counts: 96 -> ceil(67.2) = 68 -> 68 -> 34 -> ceil(27.2) = 28 -> 28.
    expected = [96, 68, 68, 34, 28, 28]
    assert [i.shape[1] for i in by_attention] == expected
    assert [i.shape[1] for i in by_random] == expected
    keyframe = set(range(KEYFRAME_SLICE * 24, (KEYFRAME_SLICE + 1) * 24))
    differs = False
    for a, r in zip(by_attention, by_random):
        for b in range(2):
            # The keyframe tokens lead, all of them, in both rules.
            assert set(a[b, :N1].tolist()) == keyframe == set(r[b, :N1].tolist())
            assert not keyframe & set(r[b, N1:].tolist())
            assert len(set(r[b].tolist())) == r.shape[1]  # no token twice
            differs |= set(a[b, N1:].tolist()) != set(r[b, N1:].tolist())
    assert differs


def test_random_rule_keeps_the_top_of_the_seeded_draw():
    """The first pruning block (block 1, 96 -> 68 tokens) keeps the keyframe and the 44 non-keyframe
    tokens with the largest of 72 uniform draws from a generator seeded with ``random_seed``."""
    clip = torch.randn(*CLIP_SHAPE)
    found = block_indices(vit("random", random_seed=11), clip)[1]
    draw = torch.rand(2, N - N1, generator=torch.Generator().manual_seed(11))
    order = keyframe_first_order(GRID, KEYFRAME_SLICE)
    for b in range(2):
        top = draw[b].topk(68 - N1).indices
        assert set(found[b, N1:].tolist()) == set(order[N1 + top].tolist())


def test_random_rule_repeats_in_eval_and_draws_anew_per_clip():
    model = vit("random")
    clip = torch.randn(*CLIP_SHAPE)
    first = block_indices(model, clip)[-1]
    second = block_indices(model, clip)[-1]  # the stream went on: other tokens
    assert not torch.equal(first, second)
    model.eval()  # an evaluation starts: the stream restarts
    assert torch.equal(block_indices(model, clip)[-1], first)
    other_seed = vit("random", random_seed=1)
    assert not torch.equal(block_indices(other_seed, clip)[-1], first)


def test_random_rule_in_training_follows_the_global_seed_and_checkpointing_recomputes_the_same_tokens():
    clip = torch.randn(*CLIP_SHAPE)
    grads = []
    for use_checkpoint in (False, True):
        model = vit("random", use_checkpoint=use_checkpoint).train()
        torch.manual_seed(5)
        out = model(clip)
        out["tokens"].square().sum().backward()
        grads.append((out["token_index"], model.patch_embed.proj.weight.grad))
    assert torch.equal(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


def test_random_scores_pick_every_non_keyframe_token_equally_often():
    """2000 selections of 3 of 8 non-keyframe tokens: each is kept 3/8 of the time (+-0.04, ~3.5 sigma)."""
    torch.manual_seed(0)
    b, n1, n2, keep = 2000, 2, 8, 5
    x = torch.arange(n1 + n2, dtype=torch.float32).expand(b, -1).unsqueeze(-1)
    index = torch.arange(n1 + n2).expand(b, -1)
    _, kept = select_tokens(x, index, random_scores(b, n2), n1, keep)
    assert torch.equal(kept[:, :n1], index[:, :n1])
    freq = torch.stack([(kept[:, n1:] == j).any(dim=1) for j in range(n1, n1 + n2)]).float().mean(dim=1)
    assert torch.all((freq - 3 / 8).abs() < 0.04), freq


def test_pruning_score_config_key():
    tiny = TINY_CONFIG
    assert get_evad_cfg(tiny).MODEL.EVAD.PRUNING_SCORE == "attention"
    cfg = get_evad_cfg(tiny, ["MODEL.EVAD.PRUNING_SCORE", "random"])
    net = PruningVideoViT(cfg)
    assert net.pruning_score == "random"
    assert net.token_counts((8, 64, 64)) == [64, 45, 45, 32]  # ceil(0.7 * 64) = 45, ceil(0.7 * 45) = 32
    with pytest.raises(ConfigValueError, match=r"MODEL.EVAD.PRUNING_SCORE = 'topk'.*'attention', 'random'"):
        get_evad_cfg(tiny, ["MODEL.EVAD.PRUNING_SCORE", "topk"])
    with pytest.raises(ValueError, match="pruning_score must be one of"):
        PruningVideoViT(**dict(TINY, pruning_score="topk"))
