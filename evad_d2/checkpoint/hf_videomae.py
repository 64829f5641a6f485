"""Hugging Face ``transformers`` VideoMAE weights -> the original VideoMAE layout of :mod:`.videomae`.

Most users get VideoMAE from the Hugging Face hub (``MCG-NJU/videomae-base``, ...). The same network
is stored there under ``transformers``' names; this module renames them to the original VideoMAE
release's (``patch_embed.proj``, ``blocks.{i}.attn.qkv``, ...), after which :func:`.convert_videomae`
does the rest, exactly as for a ``.pth`` from VideoMAE's model zoo. Recognised:

* ``VideoMAEModel`` (keys ``embeddings.*``, ``encoder.layer.{i}.*``, ``layernorm.*``);
* ``VideoMAEForVideoClassification`` (the same under ``videomae.``, plus ``fc_norm``, ``classifier``);
* ``VideoMAEForPreTraining`` (under ``videomae.``, plus ``encoder_to_decoder``, ``mask_token``,
  ``decoder.decoder_layers.{i}.*``): renamed to VideoMAE's pretraining layout (``encoder.*``,
  ``decoder.blocks.{i}.*``), so ``MODEL.EVAD.CHECKPOINT.VIDEOMAE_DECODER_INIT`` works as for the
  original files;
* both attention bias namings: ``attention.attention.query.bias``/``value.bias`` (transformers 5)
  and ``attention.attention.q_bias``/``v_bias`` (files written by transformers 4).

``transformers`` splits the attention input projection into ``query``/``key``/``value``; the
original (and our) layout fuses them into one ``qkv`` matrix with separate query/value biases and no
key bias, so the three weights are concatenated in (q, k, v) order.

A ``save_pretrained`` folder (``config.json`` next to ``model.safetensors`` or
``pytorch_model.bin``) is read with :func:`read_pretrained_folder`; its config is compared with the
model's by :func:`hf_config_problems`.
"""

import json
import os
import re
from typing import Any, Dict, List, Mapping, Tuple

import torch
from torch import Tensor

from .common import CheckpointFormatError

__all__ = [
    "HF_CONFIG_FILE",
    "HF_WEIGHT_FILES",
    "hf_config_problems",
    "hf_videomae_to_videomae",
    "is_hf_videomae_state_dict",
    "read_pretrained_folder",
]

HF_CONFIG_FILE = "config.json"
# What save_pretrained writes, in the order they are looked for (safetensors: loads no code).
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

_PATCH = "embeddings.patch_embeddings.projection."
# transformers' names below one encoder layer -> VideoMAE's below one block (attention handled apart).
_LAYER_RENAMES = {
    "attention.output.dense.": "attn.proj.",
    "intermediate.dense.": "mlp.fc1.",
    "output.dense.": "mlp.fc2.",
    "layernorm_before.": "norm1.",
    "layernorm_after.": "norm2.",
}
_ATTN = "attention.attention."
_BIAS_RENAMES = {"query.bias": "q_bias", "q_bias": "q_bias", "value.bias": "v_bias", "v_bias": "v_bias"}
_LAYER = re.compile(r"^(encoder\.layer|decoder\.decoder_layers)\.(\d+)\.(.+)$")


def _hf_prefix(state_dict: Mapping[str, Tensor]) -> Any:
    """"videomae." or "" in front of the encoder's keys; None if this is not a transformers layout."""
    for prefix in ("videomae.", ""):
        if prefix + _PATCH + "weight" in state_dict:
            return prefix
    return None


def is_hf_videomae_state_dict(state_dict: Mapping[str, Tensor]) -> bool:
    """True for a transformers VideoMAE state dict (``[videomae.]embeddings.patch_embeddings.projection.weight``)."""
    return _hf_prefix(state_dict) is not None


def _rename_layer_key(rest: str) -> str:
    """One encoder/decoder layer's key below the layer, in VideoMAE's names ("" for a q/k/v weight)."""
    if rest.startswith(_ATTN):
        tail = rest[len(_ATTN) :]
        if tail in _BIAS_RENAMES:
            return "attn." + _BIAS_RENAMES[tail]
        if tail in ("query.weight", "key.weight", "value.weight"):
            return ""  # fused below
        return "attn." + tail
    for old, new in _LAYER_RENAMES.items():
        if rest.startswith(old):
            return new + rest[len(old) :]
    return rest


def hf_videomae_to_videomae(state_dict: Mapping[str, Tensor], source: str = "checkpoint") -> Tuple[Dict[str, Tensor], str]:
    """Rename a transformers VideoMAE state dict to the original VideoMAE layout.

    Returns:
        (state dict in VideoMAE's names, the transformers class it came from). A pretraining
        model's encoder goes under ``encoder.``, as in VideoMAE's pretraining files; keys that are
        not recognised keep their names, so loading reports them as unexpected.

    Raises:
        CheckpointFormatError: a layer without all three of its query/key/value weights.
    """
    prefix = _hf_prefix(state_dict)
    if prefix is None:
        raise CheckpointFormatError(f"{source}: not a transformers VideoMAE state dict (no {_PATCH}weight)")
    pretraining = "encoder_to_decoder.weight" in state_dict or any(k.startswith("decoder.") for k in state_dict)
    classification = not pretraining and any(k.startswith(("classifier.", "fc_norm.")) for k in state_dict)
    kind = "VideoMAEForPreTraining" if pretraining else "VideoMAEForVideoClassification" if classification else "VideoMAEModel"
    enc = "encoder." if pretraining else ""
    out: Dict[str, Tensor] = {}
    qkv: Dict[str, Dict[str, Tensor]] = {}
    for key, value in state_dict.items():
        local = key[len(prefix) :] if prefix and key.startswith(prefix) else key
        m = _LAYER.match(local)
        if m:
            block = f"{enc}blocks.{m.group(2)}." if m.group(1) == "encoder.layer" else f"decoder.blocks.{m.group(2)}."
            name = _rename_layer_key(m.group(3))
            if name:
                out[block + name] = value
            else:
                qkv.setdefault(block, {})[m.group(3).split(".")[-2]] = value
        elif local.startswith(_PATCH):
            out[enc + "patch_embed.proj." + local[len(_PATCH) :]] = value
        elif local.startswith("layernorm."):
            out[enc + "norm." + local[len("layernorm.") :]] = value
        elif local.startswith("classifier."):
            out["head." + local[len("classifier.") :]] = value
        else:  # fc_norm.*, encoder_to_decoder.weight, mask_token, decoder.norm.*, decoder.head.*
            out[local] = value
    for block, parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise CheckpointFormatError(
                f"{source}: layer {block} has attention weights {sorted(parts)}; query, key and value are all needed"
            )
        out[block + "attn.qkv.weight"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return out, kind


def read_pretrained_folder(folder: str) -> Tuple[str, Dict[str, Any]]:
    """(weights file, parsed ``config.json``) of a ``save_pretrained`` folder.

    Raises:
        FileNotFoundError: no ``config.json`` or no weights file, naming the folder and what it holds.
        CheckpointFormatError: a ``config.json`` that is not a VideoMAE config.
    """
    names = sorted(os.listdir(folder))
    config_path = os.path.join(folder, HF_CONFIG_FILE)
    weights = [os.path.join(folder, n) for n in HF_WEIGHT_FILES if n in names]
    if not os.path.isfile(config_path) or not weights:
        raise FileNotFoundError(
            f"{folder}: MODEL.WEIGHTS names a folder, which loads as a Hugging Face save_pretrained folder: "
            f"{HF_CONFIG_FILE} and one of {list(HF_WEIGHT_FILES)}; it holds {names[:12]}"
        )
    try:
        with open(config_path) as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointFormatError(f"{config_path}: not a readable JSON config: {e}") from e
    if not isinstance(config, dict) or config.get("model_type") != "videomae":
        kind = config.get("model_type") if isinstance(config, dict) else type(config).__name__
        raise CheckpointFormatError(f"{config_path}: model_type is {kind!r}; only 'videomae' folders load into EVAD")
    return weights[0], config


# config.json key -> (our config key, how the model's value is read off a PruningVideoViT).
_CONFIG_CHECKS = (
    ("hidden_size", "MODEL.EVAD.EMBED_DIM", lambda vit: vit.embed_dim),
    ("num_hidden_layers", "MODEL.EVAD.DEPTH", lambda vit: len(vit.blocks)),
    ("num_attention_heads", "MODEL.EVAD.NUM_HEADS", lambda vit: vit.blocks[0].attn.num_heads),
    ("intermediate_size", "MODEL.EVAD.MLP_RATIO (x EMBED_DIM)", lambda vit: vit.blocks[0].mlp.fc1.out_features),
    ("tubelet_size", "MODEL.EVAD.TUBELET_SIZE", lambda vit: vit.tubelet_size),
    ("patch_size", "MODEL.EVAD.PATCH_SIZE", lambda vit: vit.patch_size),
    ("image_size", "MODEL.EVAD.PRETRAIN_IMG_SIZE", lambda vit: vit.pretrain_grid[1] * vit.patch_size),
    ("num_frames", "INPUT.NUM_FRAMES", lambda vit: vit.pretrain_grid[0] * vit.tubelet_size),
    ("qv_bias", "MODEL.EVAD.QKV_BIAS", lambda vit: vit.blocks[0].attn.q_bias is not None),
)


def _as_int(value: Any) -> Any:
    """A square size given as [s, s] (transformers accepts both) as s."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1]:
        return value[0]
    return value


def hf_config_problems(config: Mapping[str, Any], vit: Any, source: str) -> Tuple[List[str], List[str]]:
    """Compare a transformers ``VideoMAEConfig`` (as a dict) with a :class:`PruningVideoViT`.

    Returns:
        (errors, notes): an error per config.json key whose value the model does not have, naming
        our config key and the value to set; notes on what differs without changing the weights
        (LayerNorm eps).
    """
    errors = []
    for hf_key, our_key, read in _CONFIG_CHECKS:
        if hf_key not in config:
            continue
        theirs, ours = _as_int(config[hf_key]), read(vit)
        if theirs != ours:
            errors.append(f"{source}: {HF_CONFIG_FILE} has {hf_key} = {theirs!r}, the model {our_key} = {ours!r}")
    act = config.get("hidden_act", "gelu")
    if act != "gelu":
        errors.append(f"{source}: {HF_CONFIG_FILE} has hidden_act = {act!r}; EVAD's ViT uses 'gelu'")
    notes = []
    eps, ours_eps = config.get("layer_norm_eps"), vit.norm.eps
    if eps is not None and float(eps) != ours_eps:
        notes.append(
            f"{HF_CONFIG_FILE} has layer_norm_eps = {eps!r}, EVAD's LayerNorms use {ours_eps!r} (the original VideoMAE's); "
            "outputs differ by about the size of that difference relative to the feature variance"
        )
    return errors, notes
