"""Hugging Face transformers VideoMAE weights load through MODEL.WEIGHTS and compute what transformers
computes: a tiny random VideoMAE built locally (no download), saved in each form users meet."""
import json
import logging

import pytest
import torch
from safetensors.torch import save_file

from evad_d2.checkpoint import CheckpointFormatError, EVADCheckpointer
from evad_d2.modeling.backbone import PruningVideoViT

transformers = pytest.importorskip("transformers")

# 4 frames of 32x32: a 2x2x2 token grid of width 64, 2 layers of 2 heads. LayerNorm eps set to
# ours (1e-6; transformers' default is 1e-12, see the README's "Hugging Face VideoMAE weights").
HF_SIZES = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256, num_frames=4,
    tubelet_size=2, patch_size=16, image_size=32, layer_norm_eps=1e-6, use_mean_pooling=False,
    decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=64,
)
OUR_SIZES = dict(embed_dim=64, depth=2, num_heads=2, mlp_ratio=4.0, patch_size=16, tubelet_size=2,
                 pretrain_img_size=32, pretrain_num_frames=4, feature_layers=(0, 1))


def _hf_model(cls_name, **overrides):
    torch.manual_seed(0)
    config = transformers.VideoMAEConfig(**{**HF_SIZES, **overrides}, num_labels=5)
    model = getattr(transformers, cls_name)(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # every tensor random (biases and norms too), so none loads by luck
            p.normal_(0, 0.2)
    return model


def _our_vit(**overrides):
    torch.manual_seed(1)
    return PruningVideoViT(**{**OUR_SIZES, **overrides}).eval()


def _clip():
    torch.manual_seed(2)
    return torch.randn(2, 3, 4, 32, 32)  # ours: (B, 3, T, H, W)


def _hf_tokens(model, clip):
    encoder = model if isinstance(model, transformers.VideoMAEModel) else model.videomae
    with torch.no_grad():
        return encoder(pixel_values=clip.permute(0, 2, 1, 3, 4)).last_hidden_state  # theirs: (B, T, 3, H, W)


def _our_tokens(vit, clip):
    with torch.no_grad():
        out = vit(clip)
    tokens, index = out["tokens"], out["token_index"]  # keyframe tokens first; index: flat grid position
    flat = torch.zeros_like(tokens)
    flat.scatter_(1, index.unsqueeze(-1).expand_as(tokens), tokens)
    return flat


def _load(path):
    vit = _our_vit()
    checkpointer = EVADCheckpointer(vit)
    checkpointer.load(str(path))
    return vit, checkpointer.last_load


def _assert_same_output(model, vit):
    clip = _clip()
    expected, actual = _hf_tokens(model, clip), _our_tokens(vit, clip)
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max().item() < 1e-5


def _old_bias_names(state_dict):
    """transformers 4 stored the attention biases as attention.attention.q_bias / v_bias."""
    return {k.replace("attention.attention.query.bias", "attention.attention.q_bias")
             .replace("attention.attention.value.bias", "attention.attention.v_bias"): v for k, v in state_dict.items()}


@pytest.mark.parametrize("cls_name", ["VideoMAEModel", "VideoMAEForVideoClassification", "VideoMAEForPreTraining"])
@pytest.mark.parametrize("bias_names", ["query.bias", "q_bias"])
def test_transformers_state_dict_loads_and_computes_last_hidden_state(tmp_path, cls_name, bias_names):
    model = _hf_model(cls_name)
    sd = model.state_dict()
    if bias_names == "q_bias":
        sd = _old_bias_names(sd)
        assert any(k.endswith("attention.attention.q_bias") for k in sd)
    torch.save(sd, tmp_path / "videomae.pth")
    vit, info = _load(tmp_path / "videomae.pth")
    assert info["format"] == "videomae"
    assert info["missing"] == [] and info["unexpected"] == []
    assert len(info["loaded"]) == len(vit.state_dict())
    assert cls_name in info["report"].source_format
    ignored = " ".join(info["report"].ignored)
    if cls_name == "VideoMAEForVideoClassification":
        assert "head.weight" in ignored
    if cls_name == "VideoMAEForPreTraining":
        assert "encoder_to_decoder.weight" in ignored and "decoder.blocks.0.attn.qkv.weight" in ignored
    _assert_same_output(model, vit)


def test_safetensors_file_loads(tmp_path):
    model = _hf_model("VideoMAEModel")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    vit, info = _load(tmp_path / "model.safetensors")
    assert info["missing"] == [] and info["unexpected"] == []
    _assert_same_output(model, vit)


def test_damaged_safetensors_file_is_named(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointFormatError, match="model.safetensors: damaged or not a safetensors file"):
        _load(bad)


@pytest.mark.parametrize("cls_name", ["VideoMAEModel", "VideoMAEForVideoClassification"])
def test_save_pretrained_folder_loads_with_its_config_checked(tmp_path, cls_name):
    model = _hf_model(cls_name)
    model.save_pretrained(tmp_path / "hf")
    assert (tmp_path / "hf" / "config.json").is_file() and (tmp_path / "hf" / "model.safetensors").is_file()
    vit, info = _load(tmp_path / "hf")
    assert info["missing"] == [] and info["unexpected"] == []
    _assert_same_output(model, vit)


@pytest.mark.parametrize("ours, message", [
    (dict(pretrain_img_size=64), "config.json has image_size = 32, the model MODEL.EVAD.PRETRAIN_IMG_SIZE = 64"),
    (dict(depth=3, feature_layers=(0, 1, 2)), "config.json has num_hidden_layers = 2, the model MODEL.EVAD.DEPTH = 3"),
    (dict(pretrain_num_frames=8), "config.json has num_frames = 4, the model INPUT.NUM_FRAMES = 8"),
    (dict(tubelet_size=4), "config.json has tubelet_size = 2, the model MODEL.EVAD.TUBELET_SIZE = 4"),
])
def test_save_pretrained_folder_whose_config_differs_is_refused_naming_the_key(tmp_path, ours, message):
    _hf_model("VideoMAEModel").save_pretrained(tmp_path / "hf")
    checkpointer = EVADCheckpointer(_our_vit(**ours))
    with pytest.raises(CheckpointFormatError, match="does not match the model") as err:
        checkpointer.load(str(tmp_path / "hf"))
    assert message in str(err.value)


def test_transformers_default_layer_norm_eps_is_reported(tmp_path, caplog):
    model = _hf_model("VideoMAEModel", layer_norm_eps=1e-12)
    model.save_pretrained(tmp_path / "hf")
    with caplog.at_level(logging.INFO):
        vit, info = _load(tmp_path / "hf")
    assert any("layer_norm_eps = 1e-12" in n for n in info["report"].notes)
    # eps 1e-12 vs 1e-6 against unit-variance features: far below the test tolerance.
    _assert_same_output(model, vit)


def test_folder_without_weights_or_of_another_model_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="save_pretrained folder"):
        _load(tmp_path / "empty")
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    save_file({"x": torch.zeros(1)}, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointFormatError, match="model_type is 'bert'"):
        _load(folder)
