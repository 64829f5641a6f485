"""VideoMAE checkpoints, our own checkpoints and bad input, through EVADCheckpointer.

Checkpoints are written with the released VideoMAE key names and container layouts (pretraining:
``{"model": {"encoder.*", "decoder.*", "encoder_to_decoder.weight", "mask_token"}}``; Kinetics
fine-tuning: ``{"module": {..., "fc_norm.*", "head.*"}}``) at a tiny width, plus a key/shape check
at the real ViT-B sizes on the meta device.
"""
import datetime

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg

from evad_d2.checkpoint import CheckpointFormatError, EVADCheckpointer, convert_videomae
from evad_d2.config import add_evad_config
from evad_d2.modeling.backbone import PruningVideoViT
from evad_d2.modeling.backbone.pos_embed import sinusoid_table
from evad_d2.testing import TINY_CONFIG, build_model_from_file

DIM, DEPTH = 48, 4  # the tiny config's ViT


def encoder_layout(dim, depth, tubelet=2, patch=16, norm=True):
    out = [("patch_embed.proj.weight", (dim, 3, tubelet, patch, patch)), ("patch_embed.proj.bias", (dim,))]
    for i in range(depth):
        p = f"blocks.{i}."
        out += [
            (p + "norm1.weight", (dim,)), (p + "norm1.bias", (dim,)),
            (p + "attn.q_bias", (dim,)), (p + "attn.v_bias", (dim,)), (p + "attn.qkv.weight", (3 * dim, dim)),
            (p + "attn.proj.weight", (dim, dim)), (p + "attn.proj.bias", (dim,)),
            (p + "norm2.weight", (dim,)), (p + "norm2.bias", (dim,)),
            (p + "mlp.fc1.weight", (4 * dim, dim)), (p + "mlp.fc1.bias", (4 * dim,)),
            (p + "mlp.fc2.weight", (dim, 4 * dim)), (p + "mlp.fc2.bias", (dim,)),
        ]
    if norm:
        out += [("norm.weight", (dim,)), ("norm.bias", (dim,))]
    return out


def _tensors(layout, seed, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    if device == "meta":
        return {k: torch.empty(s, device="meta") for k, s in layout}
    return {k: torch.randn(s, generator=g) for k, s in layout}


def finetuned_sd(dim=DIM, depth=DEPTH, classes=400, seed=0, device="cpu", **kw):
    """VideoMAE Kinetics fine-tuned layout (mean pooling: fc_norm + head, no norm)."""
    layout = encoder_layout(dim, depth, norm=False, **kw)
    layout += [("fc_norm.weight", (dim,)), ("fc_norm.bias", (dim,))]
    layout += [("head.weight", (classes, dim)), ("head.bias", (classes,))]
    return _tensors(layout, seed, device)


def pretrain_sd(dim=DIM, depth=DEPTH, dec_dim=32, dec_depth=4, seed=1):
    """VideoMAE pretraining layout: encoder.*, the MAE decoder, encoder_to_decoder, mask_token."""
    layout = [("encoder." + k, s) for k, s in encoder_layout(dim, depth)]
    for i in range(dec_depth):
        block = encoder_layout(dec_dim, 1)[2:-2]  # one block's entries, without patch_embed and norm
        layout += [("decoder." + k.replace("blocks.0.", f"blocks.{i}."), s) for k, s in block]
    layout += [("decoder.norm.weight", (dec_dim,)), ("decoder.norm.bias", (dec_dim,)),
               ("decoder.head.weight", (3 * 2 * 16 * 16, dec_dim)), ("decoder.head.bias", (3 * 2 * 16 * 16,)),
               ("encoder_to_decoder.weight", (dec_dim, dim)), ("mask_token", (1, 1, dec_dim))]
    return _tensors(layout, seed)


def load(model, obj, tmp_path, **kw):
    path = str(tmp_path / "ckpt.pth")
    torch.save(obj, path)
    checkpointer = EVADCheckpointer(model, **kw)
    checkpointer.load(path)
    return checkpointer.last_load


def assert_encoder_landed(model, sd, prefix=""):
    vit_sd = model.backbone.net.state_dict()
    for key, value in sd.items():
        if key.startswith(prefix) and key[len(prefix):] in vit_sd:
            assert torch.equal(vit_sd[key[len(prefix):]], value), key


def test_finetuned_checkpoint_loads_and_reports_fc_norm(tmp_path):
    sd = finetuned_sd()
    model = build_model_from_file(TINY_CONFIG)
    info = load(model, {"module": sd}, tmp_path)
    assert info["format"] == "videomae"
    assert info["unexpected"] == [] and info["incorrect_shapes"] == []
    # Only the final norm is missing from the encoder, as the report explains; the rest is new.
    assert info["missing"] == ["backbone.net.norm.bias", "backbone.net.norm.weight"]
    assert all(not k.startswith("backbone.net.") for k in info["missing_expected"])
    assert any(k.startswith("action_head.") for k in info["missing_expected"])
    assert any("fc_norm" in n and "official EVAD" in n for n in info["report"].notes)
    assert set(info["report"].ignored) == {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}
    assert_encoder_landed(model, sd)
    assert torch.equal(model.backbone.net.norm.weight, torch.ones(DIM))
    assert torch.equal(model.backbone.net.norm.bias, torch.zeros(DIM))
    assert len(info["loaded"]) == len(sd) - 4


def test_pretrain_checkpoint_loads_encoder_and_ignores_the_mae_decoder(tmp_path):
    sd = pretrain_sd()
    model = build_model_from_file(TINY_CONFIG)
    before = {k: v.clone() for k, v in model.action_head.state_dict().items()}
    info = load(model, {"model": sd, "epoch": 800}, tmp_path)
    assert info["missing"] == [] and info["unexpected"] == []
    assert_encoder_landed(model, sd, prefix="encoder.")
    ignored = info["report"].ignored
    assert {"mask_token", "encoder_to_decoder.weight", "decoder.blocks.0.attn.qkv.weight"} <= set(ignored)
    for k, v in model.action_head.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_pretrain_decoder_init_like_the_official_loader(tmp_path):
    sd = pretrain_sd(dec_dim=32, dec_depth=4)
    model = build_model_from_file(TINY_CONFIG)  # action decoder: dim 32, 2 blocks
    info = load(model, {"model": sd}, tmp_path, videomae_decoder_init=True)
    head = model.action_head.state_dict()
    for i in range(2):
        for name in ("norm1.weight", "attn.qkv.weight", "attn.q_bias", "attn.v_bias", "mlp.fc2.weight"):
            assert torch.equal(head[f"blocks.{i}.{name}"], sd[f"decoder.blocks.{i}.{name}"])
    assert torch.equal(head["encoder_to_decoder.weight"], sd["encoder_to_decoder.weight"])
    ignored = info["report"].ignored
    assert "decoder.blocks.2.norm1.weight" in ignored and "mask_token" in ignored and "decoder.head.weight" in ignored
    assert info["missing"] == [] and info["unexpected"] == []


def test_raw_backbone_prefixed_state_dict_with_fused_qkv_bias(tmp_path):
    sd = finetuned_sd()
    for i in range(DEPTH):
        q, v = sd.pop(f"blocks.{i}.attn.q_bias"), sd.pop(f"blocks.{i}.attn.v_bias")
        sd[f"blocks.{i}.attn.qkv.bias"] = torch.cat([q, torch.full_like(q, 3.0), v])
    raw = {"backbone." + k: v for k, v in sd.items()}
    model = build_model_from_file(TINY_CONFIG)
    info = load(model, raw, tmp_path)
    assert info["unexpected"] == [] and info["missing"] == ["backbone.net.norm.bias", "backbone.net.norm.weight"]
    for i in range(DEPTH):
        fused = sd[f"blocks.{i}.attn.qkv.bias"]
        assert torch.equal(model.backbone.net.blocks[i].attn.q_bias, fused[:DIM])
        assert torch.equal(model.backbone.net.blocks[i].attn.v_bias, fused[2 * DIM:])


def test_dropping_the_key_bias_is_exact():
    # Why a fused qkv bias may lose its key part: softmax over keys ignores a per-query constant.
    torch.manual_seed(0)
    q, k = torch.randn(5, 8), torch.randn(7, 8)
    bk = torch.randn(8)
    assert torch.allclose((q @ (k + bk).t()).softmax(-1), (q @ k.t()).softmax(-1), atol=1e-6)


def test_learned_pos_embed_is_resized_to_the_pretrain_grid(tmp_path):
    sd = finetuned_sd()
    table = torch.randn(1, 4 * 8 * 8, DIM)  # learned on a (4, 8, 8) grid (128 px clips)
    sd["pos_embed"] = table
    model = build_model_from_file(TINY_CONFIG, "MODEL.EVAD.LEARNABLE_POS_EMBED", True)  # pretrain grid (4, 4, 4)
    info = load(model, {"module": sd}, tmp_path)
    assert "backbone.net.pos_embed" in info["loaded"]
    # brute force: bicubic resize of each temporal slice's 8x8 map to 4x4
    grid = table.reshape(4, 8, 8, DIM).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(4, 4), mode="bicubic", align_corners=False)
    expected = expected.permute(0, 2, 3, 1).reshape(1, -1, DIM)
    torch.testing.assert_close(model.backbone.net.pos_embed.detach(), expected)
    assert [t[1:3] for t in info["report"].transformed] == [((1, 256, DIM), (1, 64, DIM))]


def test_pos_embed_with_a_fixed_table_model(tmp_path):
    model = build_model_from_file(TINY_CONFIG)
    sd = finetuned_sd()
    sd["pos_embed"] = sinusoid_table(64, DIM).unsqueeze(0)
    info = load(model, {"module": sd}, tmp_path)
    assert "stored copy" in info["report"].ignored["pos_embed"] and info["unexpected"] == []
    sd["pos_embed"] = torch.randn(1, 64, DIM)
    info = load(model, {"module": sd}, tmp_path)
    assert "learned" in info["report"].ignored["pos_embed"]
    assert any("LEARNABLE_POS_EMBED True" in w for w in info["report"].warnings)


def test_learnable_model_without_checkpoint_pos_embed_keeps_the_sincos_init(tmp_path):
    model = build_model_from_file(TINY_CONFIG, "MODEL.EVAD.LEARNABLE_POS_EMBED", True)
    info = load(model, {"module": finetuned_sd()}, tmp_path)
    assert "backbone.net.pos_embed" in info["missing"]
    assert any("sin-cos" in n for n in info["report"].notes)
    torch.testing.assert_close(model.backbone.net.pos_embed.detach()[0], sinusoid_table(64, DIM))


def test_vit_b_real_shapes_map_completely():
    with torch.device("meta"):
        vit = PruningVideoViT(embed_dim=768, depth=12, num_heads=12, pretrain_img_size=224, pretrain_num_frames=16)
    target = {k: tuple(v.shape) for k, v in vit.state_dict().items()}
    sd = finetuned_sd(dim=768, depth=12, device="meta")
    converted, report = convert_videomae(sd, target_shapes=target, pretrain_grid=vit.pretrain_grid, prefix="net.")
    assert {k[len("net."):]: tuple(v.shape) for k, v in converted.items()} == {
        k: s for k, s in target.items() if not k.startswith("norm.")
    }
    assert len(converted) == 12 * 13 + 2
    # a stored fixed table at the real size (1, 1568, 768) is recognised as the model's own
    sd = {"pos_embed": sinusoid_table(1568, 768).unsqueeze(0), **finetuned_sd(dim=768, depth=12, device="meta")}
    _, report = convert_videomae(sd, target_shapes=target, pretrain_grid=vit.pretrain_grid)
    assert "stored copy" in report.ignored["pos_embed"]


def test_other_tubelet_or_patch_size_is_a_clear_error(tmp_path):
    model = build_model_from_file(TINY_CONFIG)
    with pytest.raises(CheckpointFormatError, match="1x16x16 tubelet embedding, but the model uses 2x16x16"):
        load(model, {"module": finetuned_sd(tubelet=1)}, tmp_path)
    with pytest.raises(CheckpointFormatError, match="2x14x14"):
        load(model, {"module": finetuned_sd(patch=14)}, tmp_path)


def test_shape_mismatch_is_an_error_naming_key_and_shapes_unless_skipping(tmp_path):
    sd = finetuned_sd()
    sd["blocks.1.mlp.fc1.weight"] = torch.randn(3 * DIM, DIM)
    sd["blocks.1.mlp.fc1.bias"] = torch.randn(3 * DIM)
    model = build_model_from_file(TINY_CONFIG)
    with pytest.raises(CheckpointFormatError) as e:
        load(model, {"module": sd}, tmp_path)
    msg = str(e.value)
    assert "backbone.net.blocks.1.mlp.fc1.weight: checkpoint (144, 48) vs model (192, 48)" in msg
    assert "backbone.net.blocks.1.mlp.fc1.bias: checkpoint (144,) vs model (192,)" in msg
    before = model.backbone.net.blocks[1].mlp.fc1.weight.detach().clone()
    info = load(model, {"module": sd}, tmp_path, skip_shape_mismatch=True)
    skipped = [k for k, _, _ in info["incorrect_shapes"]]
    assert skipped == ["backbone.net.blocks.1.mlp.fc1.weight", "backbone.net.blocks.1.mlp.fc1.bias"]
    assert torch.equal(model.backbone.net.blocks[1].mlp.fc1.weight, before)
    assert torch.equal(model.backbone.net.blocks[1].mlp.fc2.weight, sd["blocks.1.mlp.fc2.weight"])


def test_skip_switch_comes_from_the_config():
    cfg = get_cfg()
    add_evad_config(cfg)
    cfg.MODEL.EVAD.CHECKPOINT.SKIP_SHAPE_MISMATCH = True
    checkpointer = EVADCheckpointer(cfg, torch.nn.Linear(2, 2), "")
    assert checkpointer.skip_shape_mismatch and not checkpointer.videomae_decoder_init


def test_unknown_format_is_an_error(tmp_path):
    model = build_model_from_file(TINY_CONFIG)
    with pytest.raises(CheckpointFormatError, match="unrecognised checkpoint format.*conv1.weight"):
        load(model, {"state_dict": {"conv1.weight": torch.zeros(2, 3, 3, 3)}}, tmp_path)
    with pytest.raises(CheckpointFormatError, match="no state dict found"):
        load(model, {"epoch": 3, "args": "x"}, tmp_path)


def test_pickled_code_is_refused(tmp_path):
    # Any class outside torch's allowlist stands for arbitrary pickled code.
    path = str(tmp_path / "bad.pth")
    torch.save({"model": finetuned_sd(), "extra": datetime.date(2023, 6, 9)}, path)
    with pytest.raises(CheckpointFormatError, match="weights_only=True"):
        EVADCheckpointer(build_model_from_file(TINY_CONFIG)).load(path)


def test_own_checkpoint_round_trip_including_ddp_prefix(tmp_path):
    source = build_model_from_file(TINY_CONFIG)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()
    EVADCheckpointer(source, str(tmp_path)).save("model_final", iteration=7)
    target = build_model_from_file(TINY_CONFIG)
    checkpointer = EVADCheckpointer(target)
    extra = checkpointer.load(str(tmp_path / "model_final.pth"))
    assert extra["iteration"] == 7
    assert checkpointer.last_load["format"] == "evad_d2" and checkpointer.last_load["missing"] == []
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k
    ddp = {"module." + k: v for k, v in source.state_dict().items()}
    info = load(build_model_from_file(TINY_CONFIG), {"model": ddp}, tmp_path)
    assert info["format"] == "evad_d2" and info["missing"] == [] and info["unexpected"] == []
