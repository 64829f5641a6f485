"""VideoMAE checkpoints (pretraining or Kinetics fine-tuning) -> the pruning ViT's parameters.

The released files hold a state dict under ``model`` (pretraining) or ``module`` (fine-tuning), or
are the raw state dict. Encoder keys are prefixed ``encoder.`` (pretraining), ``backbone.`` or
nothing (fine-tuning); the parameter names below the prefix are the ones
:class:`~evad_d2.modeling.backbone.PruningVideoViT` uses, so most tensors load by name.

What is not loaded, and why:

* ``decoder.*``, ``encoder_to_decoder.weight``, ``mask_token`` (pretraining): the MAE pixel decoder.
  The official EVAD loader renames ``decoder.*``/``encoder_to_decoder.*`` to its own action
  decoder and loads whatever matches in shape (the first blocks and the projection); this is
  available behind ``decoder_prefix`` (config ``MODEL.EVAD.CHECKPOINT.VIDEOMAE_DECODER_INIT``).
  Its ``mask_token`` never loads officially (a different name), so it is ignored here too.
* ``fc_norm.*``, ``head.*`` (fine-tuning): the Kinetics classifier's norm and layer.
* Fine-tuned ViT-B/L checkpoints use mean pooling, so they store ``fc_norm`` but no ``norm``. The
  official EVAD code does not map ``fc_norm`` to ``norm`` (its loader matches by name only), so
  its final ``norm`` starts from LayerNorm's default (weight 1, bias 0); we do the same and say so.
* ``pos_embed``: used (resized to the model's pretraining grid) when the model learns its position
  embedding; otherwise ignored, since the model's fixed sin-cos table is the VideoMAE one.
"""

import math
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from torch import Tensor

from ..modeling.backbone.pos_embed import resize_pos_table, sinusoid_table
from .common import CheckpointFormatError, ConversionReport, strip_prefix

__all__ = ["is_videomae_state_dict", "convert_videomae", "infer_pos_grid"]

_PATCH_KEY = "patch_embed.proj.weight"
_ENCODER_PREFIXES = ("encoder.", "backbone.")
_QKV_BIAS = re.compile(r"^(blocks\.\d+\.attn\.)qkv\.bias$")
_DECODER_BLOCK = re.compile(r"^decoder\.blocks\.(\d+)\.(.+)$")
_PRETRAIN_DECODER = "VideoMAE pretraining decoder (not part of EVAD)"


def _encoder_prefix(state_dict: Mapping[str, Tensor]) -> Optional[str]:
    """The prefix in front of the encoder's keys ("" for none); None if this is not a VideoMAE layout."""
    for prefix in ("",) + _ENCODER_PREFIXES:
        if prefix + _PATCH_KEY in state_dict and any(k.startswith(prefix + "blocks.") for k in state_dict):
            return prefix
    return None


def is_videomae_state_dict(state_dict: Mapping[str, Tensor]) -> bool:
    """True for a VideoMAE encoder layout (``patch_embed.proj.weight`` and ``blocks.*`` under
    no prefix, ``encoder.`` or ``backbone.``, after removing a DDP ``module.`` prefix)."""
    return _encoder_prefix(strip_prefix(state_dict, "module.")) is not None


def infer_pos_grid(num_positions: int, preferred_t: int) -> Tuple[int, int, int]:
    """(T', H', W') of a stored position table, assuming a square spatial grid.

    Tries the model's own temporal size first, then the usual ones (VideoMAE: 16 frames -> 8).
    """
    for t in dict.fromkeys([preferred_t, 8, 16, 4, 2, 1]):
        if t > 0 and num_positions % t == 0:
            side = math.isqrt(num_positions // t)
            if side * side * t == num_positions:
                return t, side, side
    raise CheckpointFormatError(
        f"pos_embed with {num_positions} positions is not a T' x S x S token grid "
        f"(tried T' in {preferred_t}, 8, 16, 4, 2, 1)"
    )


def convert_videomae(
    state_dict: Mapping[str, Tensor],
    *,
    target_shapes: Mapping[str, Sequence[int]],
    pretrain_grid: Sequence[int],
    prefix: str = "",
    decoder_prefix: Optional[str] = None,
    decoder_shapes: Optional[Mapping[str, Sequence[int]]] = None,
    source: str = "checkpoint",
) -> Tuple[Dict[str, Tensor], ConversionReport]:
    """Map a VideoMAE state dict onto a :class:`PruningVideoViT`.

    Args:
        state_dict: the VideoMAE state dict (any of the prefixes above).
        target_shapes: the ViT's own state-dict shapes, keys without ``prefix``; a ``pos_embed``
            entry means the model learns its position embedding.
        pretrain_grid: (T', H', W') the model's position table is defined on.
        prefix: where the ViT sits in the model (``"backbone.net."`` in EVAD).
        decoder_prefix: if given (e.g. ``"action_head."``), the pretraining decoder's
            ``blocks.*`` and ``encoder_to_decoder`` are passed on under this prefix where
            ``decoder_shapes`` has the same key and shape, as the official loader does.
        decoder_shapes: the action decoder's state-dict shapes, keys without ``decoder_prefix``.
        source: file name for messages.

    Returns:
        (model state dict entries, report). Keys not recognised are passed on under ``prefix``, so
        loading reports them as unexpected.
    """
    sd = strip_prefix(state_dict, "module.")
    enc_prefix = _encoder_prefix(sd)
    if enc_prefix is None:
        raise CheckpointFormatError(f"{source}: not a VideoMAE layout (no {_PATCH_KEY} next to blocks.*)")
    pretraining = enc_prefix == "encoder."
    report = ConversionReport(f"VideoMAE {'pretraining' if pretraining else 'fine-tuned'} checkpoint {source}")
    out: Dict[str, Tensor] = {}

    def put(src: str, dst: str, value: Tensor) -> None:
        out[dst] = value
        report.mapped.append((src, dst))

    for key, value in sd.items():
        local = key[len(enc_prefix) :] if enc_prefix and key.startswith(enc_prefix) else key
        if key.startswith("decoder.") or key in ("encoder_to_decoder.weight", "mask_token"):
            _convert_decoder_tensor(key, value, decoder_prefix, decoder_shapes or {}, put, report)
        elif local.startswith(("fc_norm.", "head.")):
            report.ignored[key] = "Kinetics classifier (fc_norm/head), not used by EVAD"
        elif local == _PATCH_KEY:
            _check_patch_embed(value, target_shapes.get(_PATCH_KEY), source)
            put(key, prefix + local, value)
        elif local == "pos_embed":
            _convert_pos_embed(key, value, target_shapes, pretrain_grid, prefix, put, report)
        elif (qkv := _QKV_BIAS.match(local)) and qkv.group(1) + "q_bias" in target_shapes:
            attn = prefix + qkv.group(1)
            q, _, v = value.chunk(3)
            put(key, attn + "q_bias", q)
            put(key, attn + "v_bias", v)
            # A key bias adds q.b_k to every logit of a query's row: softmax removes it exactly.
            why = "fused qkv.bias split into q_bias/v_bias, key bias dropped (softmax-invariant)"
            report.transformed.append((attn + "q_bias/v_bias", tuple(value.shape), tuple(q.shape), why))
        else:
            put(key, prefix + local, value)

    report.notes.extend(_uninitialised_notes(sd, out, target_shapes, prefix, enc_prefix))
    return out, report


def _convert_decoder_tensor(key, value, decoder_prefix, decoder_shapes, put, report) -> None:
    """A pretraining-decoder tensor: ignored, or passed on to the action decoder under
    ``decoder_prefix`` where that has a same-shaped tensor (the official loader's behaviour)."""
    m = _DECODER_BLOCK.match(key)
    local_dec = f"blocks.{m.group(1)}.{m.group(2)}" if m else key
    if decoder_prefix is None or (m is None and key != "encoder_to_decoder.weight"):
        report.ignored[key] = _PRETRAIN_DECODER
    elif tuple(decoder_shapes.get(local_dec, ())) == tuple(value.shape):
        put(key, decoder_prefix + local_dec, value)
    else:
        report.ignored[key] = "pretraining decoder tensor without a same-shaped action-decoder tensor"


def _uninitialised_notes(sd, out, target_shapes, prefix: str, enc_prefix: str) -> List[str]:
    """Notes on the final norm and the learnable position embedding when the checkpoint lacks them."""
    notes = []
    if "norm.weight" in target_shapes and "norm.weight" not in {d[len(prefix) :] for d in out}:
        if any(k.startswith(enc_prefix + "fc_norm.") for k in sd):
            notes.append(
                "the checkpoint has fc_norm (mean-pooling classifier norm) but no norm: the encoder's final "
                f"{prefix}norm stays at its initialisation (weight 1, bias 0), as in the official EVAD code, "
                "which does not map fc_norm to norm"
            )
        else:
            notes.append(f"the checkpoint has no final norm: {prefix}norm stays at its initialisation")
    if "pos_embed" in target_shapes and not any(d == prefix + "pos_embed" for d in out):
        notes.append(
            f"no pos_embed in the checkpoint (VideoMAE's table is fixed): the learnable {prefix}pos_embed keeps "
            "its initial value, the same sin-cos table"
        )
    return notes


def _check_patch_embed(value: Tensor, target: Optional[Sequence[int]], source: str) -> None:
    if value.dim() != 5:
        raise CheckpointFormatError(
            f"{source}: {_PATCH_KEY} has shape {tuple(value.shape)}, expected a Conv3d kernel (C, 3, t, p, p)"
        )
    if target is not None and tuple(value.shape[2:]) != tuple(target[2:]):
        t, p1, p2 = value.shape[2:]
        mt, mp1, mp2 = target[2:]
        raise CheckpointFormatError(
            f"{source}: {_PATCH_KEY} {tuple(value.shape)} is a {t}x{p1}x{p2} tubelet embedding, but the model "
            f"uses {mt}x{mp1}x{mp2} (MODEL.EVAD.TUBELET_SIZE x MODEL.EVAD.PATCH_SIZE); only checkpoints with the "
            "model's tubelet and patch size can be loaded"
        )


def _convert_pos_embed(key, value, target_shapes, pretrain_grid, prefix, put, report) -> None:
    table = value.reshape(-1, value.shape[-1]).float()
    src_grid = infer_pos_grid(table.shape[0], int(pretrain_grid[0]))
    if "pos_embed" not in target_shapes:
        reference = sinusoid_table(table.shape[0], table.shape[1])
        diff = (table - reference).abs().max().item()
        if diff < 1e-4:
            report.ignored[key] = "stored copy of the fixed sin-cos table the model computes itself"
        else:
            report.ignored[key] = "learned position embedding, but the model uses the fixed sin-cos table"
            report.warnings.append(
                f"{key} {tuple(value.shape)} differs from the sin-cos table by up to {diff:.3g}: it looks learned; "
                "set MODEL.EVAD.LEARNABLE_POS_EMBED True to use it"
            )
        return
    resized = resize_pos_table(table, src_grid, tuple(pretrain_grid)).unsqueeze(0).to(value.dtype)
    put(key, prefix + "pos_embed", resized)
    if tuple(src_grid) != tuple(pretrain_grid):
        report.transformed.append(
            (
                prefix + "pos_embed",
                tuple(value.shape),
                tuple(resized.shape),
                f"resized from grid {src_grid} to {tuple(pretrain_grid)}",
            )
        )
