"""A detectron2 checkpointer that loads every weight format EVAD users meet, from ``MODEL.WEIGHTS``:

* this project's own checkpoints (detectron2 ``{"model": ..., "optimizer": ..., ...}``), including
  official checkpoints converted by ``tools/convert_official_evad.py``;
* official EVAD release checkpoints (converted on the fly, see :mod:`.official_evad`);
* VideoMAE pretraining or Kinetics fine-tuned checkpoints (see :mod:`.videomae`).

It says which format it recognised, what it converted or ignored and why, which model tensors
were loaded, and which were not, separating the ones a backbone checkpoint cannot hold (heads,
FPN) from the ones it should have held. A tensor whose shape differs from the model's is an error
naming the key and both shapes, unless ``skip_shape_mismatch`` is set.
"""

from typing import Any, Dict, List, Mapping, Optional, Tuple

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import configurable
from fvcore.common.checkpoint import (
    _IncompatibleKeys,
    get_missing_parameters_message,
    get_unexpected_parameters_message,
)
from torch import nn

from ..modeling.backbone import PruningVideoViT
from ..modeling.heads import ContextRefinementHead
from .common import CheckpointFormatError, ConversionReport, find_state_dict, load_checkpoint_file, strip_prefix
from .official_evad import (
    REQUIRED_OVERRIDES,
    is_official_evad_state_dict,
    official_config_overrides,
    official_to_evad_d2,
)
from .videomae import convert_videomae, is_videomae_state_dict

__all__ = ["EVADCheckpointer", "FORMAT_EVAD_D2", "FORMAT_OFFICIAL", "FORMAT_VIDEOMAE"]

FORMAT_EVAD_D2 = "evad_d2"
FORMAT_OFFICIAL = "official_evad"
FORMAT_VIDEOMAE = "videomae"

# Entries this checkpointer adds to a loaded checkpoint dict for its own _load_model.
_FORMAT = "__evad_format__"
_REPORT = "__evad_report__"
_CHECK_PREFIXES = "__evad_prefixes_expected__"


def _named_instance(model: nn.Module, cls) -> Tuple[Optional[str], Optional[nn.Module]]:
    """(prefix with trailing dot, module) of the first submodule of type ``cls``."""
    for name, module in model.named_modules():
        if isinstance(module, cls):
            return (name + "." if name else ""), module
    return None, None


class EVADCheckpointer(DetectionCheckpointer):
    """:class:`DetectionCheckpointer` that recognises and converts EVAD's weight formats.

    After each :meth:`load`, :attr:`last_load` holds ``{"format", "report", "loaded",
    "missing", "missing_expected", "unexpected", "incorrect_shapes"}`` for callers and tests.
    """

    @configurable
    def __init__(
        self,
        model: nn.Module,
        save_dir: str = "",
        *,
        save_to_disk: Optional[bool] = None,
        skip_shape_mismatch: bool = False,
        videomae_decoder_init: bool = False,
        **checkpointables: Any,
    ):
        """
        Args:
            model, save_dir, save_to_disk, checkpointables: as :class:`DetectionCheckpointer`.
            skip_shape_mismatch: leave tensors whose checkpoint shape differs from the model's at
                their initialisation (with a warning) instead of raising.
            videomae_decoder_init: from a VideoMAE pretraining checkpoint, also initialise the
                action decoder's blocks and ``encoder_to_decoder`` from the MAE decoder where
                shapes match (the official EVAD loader's behaviour).
        """
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.skip_shape_mismatch = bool(skip_shape_mismatch)
        self.videomae_decoder_init = bool(videomae_decoder_init)
        self.last_load: Dict[str, Any] = {}

    @classmethod
    def from_config(cls, cfg, model, save_dir="", **kwargs):
        c = cfg.MODEL.EVAD.CHECKPOINT
        return {
            "model": model,
            "save_dir": save_dir,
            "skip_shape_mismatch": c.SKIP_SHAPE_MISMATCH,
            "videomae_decoder_init": c.VIDEOMAE_DECODER_INIT,
            **kwargs,
        }

    # ------------------------------------------------------------------ reading and converting
    def _torch_load(self, f):
        return load_checkpoint_file(f)

    def _load_file(self, filename: str) -> Dict[str, Any]:
        loaded = super()._load_file(filename)
        if filename.endswith((".pkl", ".pyth")):
            return loaded  # detectron2 / Caffe2 / pycls model zoo files, handled by detectron2
        container = loaded["model"]
        sd, _ = find_state_dict(container if isinstance(container, Mapping) else loaded, filename)
        model_keys = set(self.model.state_dict().keys())

        if is_official_evad_state_dict(sd):
            return self._from_official(sd, loaded, filename, model_keys)
        if self._is_own_format(sd, model_keys):
            loaded["model"] = sd
            loaded[_FORMAT] = FORMAT_EVAD_D2
            return loaded
        if is_videomae_state_dict(sd):
            return self._from_videomae(sd, filename)
        sample = sorted(sd.keys())[:8]
        raise CheckpointFormatError(
            f"{filename}: unrecognised checkpoint format. State-dict keys start with {sample}; expected an evad_d2 "
            "checkpoint (backbone.net.*, localization_head.*, action_head.*), an official EVAD checkpoint "
            "(model_state with det_head.*), or a VideoMAE checkpoint (patch_embed.proj.weight and blocks.* with "
            "prefix encoder., backbone. or none)"
        )

    @staticmethod
    def _is_own_format(sd: Mapping[str, Any], model_keys) -> bool:
        keys = set(strip_prefix(sd, "module.").keys())
        ours = ("backbone.net.", "localization_head.", "action_head.")
        return any(k.startswith(ours) for k in keys) or (bool(keys) and keys <= model_keys)

    def _from_official(self, sd, loaded, filename, model_keys) -> Dict[str, Any]:
        converted, report = official_to_evad_d2(sd, source=filename)
        foreign = sorted(set(converted) - model_keys)
        if foreign:
            raise CheckpointFormatError(
                f"{filename}: the official checkpoint has {len(foreign)} tensors this model has no place for "
                f"(is the model built with the official checkpoint's settings? action head 'decoder', same depths): "
                f"{foreign[:12]}"
            )
        cfg_text = self._official_cfg_text(loaded)
        if cfg_text is not None:
            overrides, warnings = official_config_overrides(cfg_text)
            report.warnings.extend(warnings)
            report.warnings.extend(self._check_official_settings(overrides))
        else:
            report.notes.append("no training config in the file: keep rates, w_kf and sizes cannot be checked")
            report.warnings.extend(self._check_official_settings(REQUIRED_OVERRIDES))
        return {"model": converted, _FORMAT: FORMAT_OFFICIAL, _REPORT: report, "__author__": "official EVAD"}

    @staticmethod
    def _official_cfg_text(loaded: Mapping[str, Any]) -> Optional[str]:
        for container in (loaded, loaded.get("model")):
            if isinstance(container, Mapping) and isinstance(container.get("cfg"), str):
                return container["cfg"]
        return None

    @staticmethod
    def _format_overrides(overrides) -> str:
        return " ".join(f"{k} {v!r}" for k, v in overrides)

    def _check_official_settings(self, overrides: List[Tuple[str, Any]]) -> List[str]:
        """Warnings where the model's inference settings differ from the official checkpoint's."""
        model = self.model
        actual: Dict[str, Any] = {}
        _, vit = _named_instance(model, PruningVideoViT)
        if vit is not None:
            actual["MODEL.EVAD.KEEP_RATES"] = list(vit.keep_rates)
            actual["MODEL.EVAD.KEYFRAME_WEIGHT"] = vit.keyframe_weight
        _, head = _named_instance(model, ContextRefinementHead)
        if head is not None:
            actual["MODEL.EVAD.DECODER.OFFICIAL_TOKEN_ORDER"] = head.official_token_order
            actual["MODEL.EVAD.DECODER.ROI_EXTEND"] = list(head.roi_extend)
        if hasattr(model, "keep_all_if_none"):
            actual["MODEL.EVAD.LOC.KEEP_ALL_IF_NONE"] = model.keep_all_if_none
        if hasattr(model, "score_thresh"):
            actual["MODEL.EVAD.LOC.SCORE_THRESH_TEST"] = model.score_thresh
        wanted = dict(overrides)
        differ = [
            (k, wanted[k])
            for k in actual
            if k in wanted and (list(wanted[k]) if isinstance(wanted[k], (list, tuple)) else wanted[k]) != actual[k]
        ]
        if not differ:
            return []
        return [
            "the model's settings differ from the official checkpoint's ("
            + ", ".join(f"{k}: model {actual[k]!r}, official {v!r}" for k, v in differ)
            + "); to reproduce official outputs set "
            + self._format_overrides(differ)
        ]

    def _from_videomae(self, sd, filename) -> Dict[str, Any]:
        vit_prefix, vit = _named_instance(self.model, PruningVideoViT)
        if vit is None:
            raise CheckpointFormatError(
                f"{filename} is a VideoMAE checkpoint, but the model has no PruningVideoViT to load it into"
            )
        dec_prefix, dec_shapes = None, None
        if self.videomae_decoder_init:
            dec_prefix, head = _named_instance(self.model, ContextRefinementHead)
            if head is not None:
                dec_shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
        converted, report = convert_videomae(
            sd,
            target_shapes={k: tuple(v.shape) for k, v in vit.state_dict().items()},
            pretrain_grid=vit.pretrain_grid,
            prefix=vit_prefix,
            decoder_prefix=dec_prefix,
            decoder_shapes=dec_shapes,
            source=filename,
        )
        return {
            "model": converted,
            _FORMAT: FORMAT_VIDEOMAE,
            _REPORT: report,
            # Only the encoder must come complete; a decoder init covers some blocks at most.
            _CHECK_PREFIXES: [vit_prefix],
            "__author__": "VideoMAE",
        }

    # ------------------------------------------------------------------ loading and reporting
    def _load_model(self, checkpoint: Dict[str, Any]) -> _IncompatibleKeys:
        fmt = checkpoint.pop(_FORMAT, FORMAT_EVAD_D2)
        report: Optional[ConversionReport] = checkpoint.pop(_REPORT, None)
        expected_prefixes = checkpoint.pop(_CHECK_PREFIXES, None)
        if report is not None:
            report.log(self.logger)
        sd = strip_prefix(checkpoint["model"], "module.")
        checkpoint["model"] = sd
        model_sd = self.model.state_dict()
        mismatched = [
            (k, tuple(v.shape), tuple(model_sd[k].shape))
            for k, v in sd.items()
            if k in model_sd and hasattr(v, "shape") and tuple(v.shape) != tuple(model_sd[k].shape)
        ]
        if mismatched and not self.skip_shape_mismatch:
            lines = "\n".join(f"  {k}: checkpoint {a} vs model {b}" for k, a, b in mismatched)
            raise CheckpointFormatError(
                f"{len(mismatched)} checkpoint tensors do not fit the model's shapes ({fmt} checkpoint):\n{lines}\n"
                "Build the model with the checkpoint's settings, or set MODEL.EVAD.CHECKPOINT.SKIP_SHAPE_MISMATCH True "
                "to leave these tensors at their initialisation."
            )
        provided = set(sd)
        incompatible = super()._load_model(checkpoint)
        skipped = {k for k, _, _ in incompatible.incorrect_shapes}
        missing = list(incompatible.missing_keys)
        # A backbone checkpoint cannot hold the FPN or the heads: those are new, not missing.
        if expected_prefixes is not None:
            should_have = [k for k in missing if k.startswith(tuple(expected_prefixes))]
            new = [k for k in missing if k not in should_have]
        else:
            should_have, new = missing, []
        self.last_load = {
            "format": fmt,
            "report": report,
            "loaded": sorted((provided & set(model_sd)) - skipped),
            "missing": sorted(should_have),
            "missing_expected": sorted(new),
            "unexpected": sorted(incompatible.unexpected_keys),
            "incorrect_shapes": list(incompatible.incorrect_shapes),
        }
        return incompatible

    def _log_incompatible_keys(self, incompatible: _IncompatibleKeys) -> None:
        info = self.last_load
        self.logger.info(
            f"Loaded {len(info['loaded'])} of {len(self.model.state_dict())} model tensors "
            f"(checkpoint format: {info['format']})"
        )
        for k, shape_checkpoint, shape_model in incompatible.incorrect_shapes:
            self.logger.warning(f"Not loaded (shape): {k}: checkpoint {shape_checkpoint} vs model {shape_model}")
        if info["missing_expected"]:
            counts: Dict[str, int] = {}
            for k in info["missing_expected"]:
                counts[k.split(".")[0]] = counts.get(k.split(".")[0], 0) + 1
            self.logger.info(
                f"{len(info['missing_expected'])} tensors are not part of a {info['format']} checkpoint and keep their "
                "initialisation: " + ", ".join(f"{m} ({n})" for m, n in sorted(counts.items()))
            )
        if info["missing"]:
            self.logger.warning(get_missing_parameters_message(info["missing"]))
        if info["unexpected"]:
            self.logger.warning(get_unexpected_parameters_message(info["unexpected"]))
