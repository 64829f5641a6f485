"""A detectron2 checkpointer that loads every weight format EVAD users meet, from ``MODEL.WEIGHTS``:

* this project's own checkpoints (detectron2 ``{"model": ..., "optimizer": ..., ...}``), including
  official checkpoints converted by ``tools/convert_official_evad.py``;
* official EVAD release checkpoints (converted on the fly, see :mod:`.official_evad`);
* VideoMAE pretraining or Kinetics fine-tuned checkpoints (see :mod:`.videomae`), also as saved by
  Hugging Face ``transformers`` (state dicts, ``.safetensors`` files, ``save_pretrained`` folders
  whose ``config.json`` is checked against the model; see :mod:`.hf_videomae`).

It says which format it recognised, what it converted or ignored and why, which model tensors
were loaded, and which were not, separating the ones a backbone checkpoint cannot hold (heads,
FPN) from the ones it should have held. A tensor whose shape differs from the model's is an error
naming the key and both shapes, unless ``skip_shape_mismatch`` is set.

Safe and crash-proof:

* no file it is given runs code: ``.pkl`` files (detectron2/Caffe2 model zoo) are read with the
  restricted unpickler, ``.safetensors`` with the safetensors package, everything else with
  ``torch.load(weights_only=True)``;
* an empty, truncated or text file is a :class:`DamagedCheckpointError` naming the file;
* every save is atomic (:func:`evad_d2.utils.atomic_io.atomic_write`), ``last_checkpoint`` is
  updated only after the checkpoint is complete under its name;
* a resume whose ``last_checkpoint`` names a missing or damaged file falls back to the newest
  complete ``model_*.pth`` in the folder, with a warning naming both.
"""

import os
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import configurable
from fvcore.common.checkpoint import (
    _IncompatibleKeys,
    get_missing_parameters_message,
    get_unexpected_parameters_message,
)
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..modeling.backbone import PruningVideoViT
from ..modeling.heads import ContextRefinementHead
from ..utils.atomic_io import atomic_write, remove_stale_temporaries
from .common import (
    CheckpointFormatError,
    ConversionReport,
    DamagedCheckpointError,
    checkpoint_file_problem,
    find_state_dict,
    find_submodule,
    load_checkpoint_file,
    load_pickle_checkpoint,
    strip_prefix,
)
from .official_evad import (
    REQUIRED_OVERRIDES,
    is_official_evad_state_dict,
    official_cfg_text,
    official_config_overrides,
    official_settings_warnings,
    official_to_evad_d2,
)
from .hf_videomae import hf_config_problems, hf_videomae_to_videomae, is_hf_videomae_state_dict, read_pretrained_folder
from .videomae import convert_videomae, is_videomae_state_dict

__all__ = ["ACTION_CLASSIFIER_LAYER", "EVADCheckpointer", "FORMAT_EVAD_D2", "FORMAT_OFFICIAL", "FORMAT_VIDEOMAE", "LAST_CHECKPOINT"]

FORMAT_EVAD_D2 = "evad_d2"
FORMAT_OFFICIAL = "official_evad"
FORMAT_VIDEOMAE = "videomae"

# Entries this checkpointer adds to a loaded checkpoint dict for its own _load_model.
_FORMAT = "__evad_format__"
_REPORT = "__evad_report__"
_CHECK_PREFIXES = "__evad_prefixes_expected__"

# The name both built-in action heads give their per-class Linear layers (the only tensors whose
# shape depends on MODEL.EVAD.NUM_ACTION_CLASSES); a registered head should use it too.
ACTION_CLASSIFIER_LAYER = "action_logits"

LAST_CHECKPOINT = "last_checkpoint"  # fvcore's tag file in the save folder
# What detectron2's PeriodicCheckpointer writes: model_<7-digit iteration>.pth and model_final.pth.
_TRAINING_CHECKPOINT = re.compile(r"^model_(\d+|final)\.pth$")


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
        new_action_classes: bool = False,
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
            new_action_classes: fine-tune on other classes: the action classifiers (model tensors
                named ``*.action_logits.*``, see :data:`ACTION_CLASSIFIER_LAYER`) are not loaded
                and keep their initialisation; every other tensor loads as usual. The load's
                report lists them under ``"reinitialised"``.
        """
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.skip_shape_mismatch = bool(skip_shape_mismatch)
        self.videomae_decoder_init = bool(videomae_decoder_init)
        self.new_action_classes = bool(new_action_classes)
        self.last_load: Dict[str, Any] = {}
        # (folder, config.json) while a save_pretrained folder loads.
        self._pretrained_folder: Optional[Tuple[str, Dict[str, Any]]] = None

    @classmethod
    def from_config(cls, cfg, model, save_dir="", **kwargs):
        c = cfg.MODEL.EVAD.CHECKPOINT
        return {
            "model": model,
            "save_dir": save_dir,
            "skip_shape_mismatch": c.SKIP_SHAPE_MISMATCH,
            "videomae_decoder_init": c.VIDEOMAE_DECODER_INIT,
            "new_action_classes": c.NEW_ACTION_CLASSES,
            **kwargs,
        }

    # ------------------------------------------------------------------ saving
    def save(self, name: str, **kwargs: Any) -> None:
        """Write ``{save_dir}/{name}.pth`` atomically, then tag it in ``last_checkpoint``.

        As fvcore's ``Checkpointer.save`` (model, checkpointables, ``kwargs``), except that the
        file appears under its name only once complete: an interrupted save (kill -9, Ctrl-C,
        full disk) leaves the previous checkpoint and ``last_checkpoint`` as they were.
        """
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        if os.path.basename(save_file) != basename:
            raise ValueError(f"checkpoint name {name!r} must be a plain file name, without folders")
        for stale in remove_stale_temporaries(save_file):
            self.logger.info(f"Removed {stale}, left by an interrupted save")
        self.logger.info(f"Saving checkpoint to {save_file}")
        try:
            with atomic_write(save_file, "wb") as f:
                torch.save(data, f)
        except RuntimeError as e:
            # torch.save turns an error of the file's write (Ctrl-C, a full disk) into its own
            # "enforce fail at inline_container.cc"; raise what happened, naming the file.
            cause = e.__context__
            unchanged = "nothing was written under that name; the previous checkpoints and last_checkpoint are unchanged"
            if isinstance(cause, KeyboardInterrupt):
                raise KeyboardInterrupt(f"interrupted while saving {save_file}: {unchanged}") from None
            if isinstance(cause, OSError):
                raise type(cause)(cause.errno, f"{cause.strerror} while saving {save_file}: {unchanged}") from e
            raise
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Atomically name ``last_filename_basename`` in ``{save_dir}/last_checkpoint``."""
        with atomic_write(os.path.join(self.save_dir, LAST_CHECKPOINT), "w") as f:
            f.write(last_filename_basename)

    # ------------------------------------------------------------------ resuming
    def complete_checkpoints(self, exclude: Tuple[str, ...] = ()) -> List[str]:
        """Training checkpoints (``model_<iter>.pth``, ``model_final.pth``) in ``save_dir`` that
        look complete, newest first (by modification time, then iteration; final last written).

        "Complete" is :func:`checkpoint_file_problem`'s check: not empty, not truncated.
        """
        if not self.save_dir or not os.path.isdir(self.save_dir):
            return []
        excluded = {os.path.abspath(p) for p in exclude}
        found = []
        for name in os.listdir(self.save_dir):
            match = _TRAINING_CHECKPOINT.match(name)
            path = os.path.join(self.save_dir, name)
            if match is None or os.path.abspath(path) in excluded or checkpoint_file_problem(path) is not None:
                continue
            order = float("inf") if match.group(1) == "final" else int(match.group(1))
            found.append((os.path.getmtime(path), order, path))
        return [path for _, _, path in sorted(found, reverse=True)]

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        """As fvcore's: with ``resume`` and a ``last_checkpoint`` tag, load everything from the
        checkpoint it names, else only the model from ``path``.

        If the tagged checkpoint is missing or damaged, resume from the newest complete training
        checkpoint in ``save_dir`` instead, with a warning naming both; if there is none, raise.

        Raises:
            DamagedCheckpointError: the tagged checkpoint is missing or damaged and no other
                complete one exists.
        """
        if not (resume and self.has_checkpoint()):
            return self.load(path, checkpointables=[])
        tag = os.path.join(self.save_dir, LAST_CHECKPOINT)
        named = self.get_checkpoint_file()
        try:
            return self.load(named)
        except (DamagedCheckpointError, FileNotFoundError) as e:
            problem = str(e)
        for candidate in self.complete_checkpoints(exclude=(named,)):
            try:
                loaded = self.load(candidate)
            except DamagedCheckpointError as e:  # damaged inside, past the quick check
                self.logger.warning(f"Cannot resume from {candidate} either: {e}")
                continue
            self.logger.warning(
                f"{tag} names {named}, which cannot be loaded ({problem}); resumed instead from {candidate}, "
                f"the newest complete checkpoint in {self.save_dir}"
            )
            return loaded
        raise DamagedCheckpointError(
            f"cannot resume: {tag} names {named}, which cannot be loaded ({problem}), and {self.save_dir} holds "
            "no other complete model_*.pth. Remove the damaged file and "
            f"{tag} to start again from MODEL.WEIGHTS, or run without --resume."
        )

    # ------------------------------------------------------------------ reading and converting
    def load(self, path: str, *args, **kwargs) -> Dict[str, Any]:
        # Under DDP, detectron2's load first gathers which processes have the file (and loads where
        # one lacks it, with a warning); raising here in one process only would hang the others.
        distributed = isinstance(self.model, DistributedDataParallel)
        if path and "://" not in path and os.path.isdir(path):
            folder = path
            path, config = read_pretrained_folder(folder)
            self._pretrained_folder = (folder, config)
        if path and "://" not in path and not distributed and not os.path.isfile(path):
            # fvcore would assert; say which file and where the name came from.
            raise FileNotFoundError(f"{path}: checkpoint file not found (from MODEL.WEIGHTS or {LAST_CHECKPOINT})")
        try:
            return super().load(path, *args, **kwargs)
        finally:
            # detectron2 resets this only on success; a failed load would make the next one assert.
            self._parsed_url_during_load = None
            self._pretrained_folder = None

    def _torch_load(self, f):
        loaded = load_checkpoint_file(f)
        if not isinstance(loaded, Mapping):
            raise CheckpointFormatError(f"{f}: a checkpoint holds a dict, got {type(loaded).__name__}")
        return loaded

    def _load_file(self, filename: str) -> Dict[str, Any]:
        if filename.endswith(".pkl"):
            # detectron2 / Caffe2 model-zoo files, with detectron2's semantics (numpy arrays,
            # matching_heuristics), read without running code.
            return load_pickle_checkpoint(filename)
        if filename.endswith(".pyth"):
            loaded = self._torch_load(filename)
            pycls = self._pycls_checkpoint(loaded, filename)
            if pycls is not None:
                return pycls
            loaded = loaded if "model" in loaded else {"model": loaded}
        else:
            loaded = super()._load_file(filename)
        container = loaded["model"]
        sd, _ = find_state_dict(container if isinstance(container, Mapping) else loaded, filename)
        model_keys = set(self.model.state_dict().keys())

        if is_official_evad_state_dict(sd):
            return self._from_official(sd, loaded, filename, model_keys)
        if self._is_own_format(sd, model_keys):
            loaded["model"] = sd
            loaded[_FORMAT] = FORMAT_EVAD_D2
            return loaded
        if is_hf_videomae_state_dict(sd):
            return self._from_hf_videomae(sd, filename)
        if is_videomae_state_dict(sd):
            return self._from_videomae(sd, filename)
        sample = sorted(sd.keys())[:8]
        raise CheckpointFormatError(
            f"{filename}: unrecognised checkpoint format. State-dict keys start with {sample}; expected an evad_d2 "
            "checkpoint (backbone.net.*, localization_head.*, action_head.*), an official EVAD checkpoint "
            "(model_state with det_head.*), or a VideoMAE checkpoint (patch_embed.proj.weight and blocks.* with "
            "prefix encoder., backbone. or none; or transformers' embeddings.patch_embeddings.* and encoder.layer.*)"
        )

    @staticmethod
    def _pycls_checkpoint(loaded: Mapping[str, Any], filename: str) -> Optional[Dict[str, Any]]:
        """detectron2's reading of a pycls ``.pyth`` (``model_state`` loaded by name-matching
        heuristics), or None for the other formats a ``.pyth`` can hold (PySlowFast, i.e. official EVAD)."""
        state = loaded.get("model_state")
        if not isinstance(state, Mapping):
            raise CheckpointFormatError(f"{filename}: a .pyth checkpoint (pycls, PySlowFast) holds 'model_state'; "
                                        f"top-level keys are {sorted(map(str, loaded))[:12]}")
        sd, _ = find_state_dict(state, filename)
        if is_official_evad_state_dict(sd):
            return None
        model_state = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
        return {"model": model_state, "__author__": "pycls", "matching_heuristics": True}

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
        cfg_text = official_cfg_text(loaded)
        if cfg_text is not None:
            overrides, warnings = official_config_overrides(cfg_text)
            report.warnings.extend(warnings)
            report.warnings.extend(official_settings_warnings(self.model, overrides))
        else:
            report.notes.append("no training config in the file: keep rates, w_kf and sizes cannot be checked")
            report.warnings.extend(official_settings_warnings(self.model, REQUIRED_OVERRIDES))
        return {"model": converted, _FORMAT: FORMAT_OFFICIAL, _REPORT: report, "__author__": "official EVAD"}

    def _from_videomae(self, sd, filename) -> Dict[str, Any]:
        vit_prefix, vit = find_submodule(self.model, PruningVideoViT)
        if vit is None:
            raise CheckpointFormatError(
                f"{filename} is a VideoMAE checkpoint, but the model has no PruningVideoViT to load it into"
            )
        dec_prefix, dec_shapes = None, None
        if self.videomae_decoder_init:
            dec_prefix, head = find_submodule(self.model, ContextRefinementHead)
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

    def _from_hf_videomae(self, sd, filename) -> Dict[str, Any]:
        """A transformers VideoMAE state dict: renamed to VideoMAE's layout, then as :meth:`_from_videomae`;
        from a save_pretrained folder, its config.json is checked against the model first."""
        renamed, kind = hf_videomae_to_videomae(sd, source=filename)
        notes = []
        if self._pretrained_folder is not None:
            folder, config = self._pretrained_folder
            _, vit = find_submodule(self.model, PruningVideoViT)
            errors, notes = hf_config_problems(config, vit, folder) if vit is not None else ([], [])
            if errors:
                raise CheckpointFormatError(
                    "the Hugging Face folder's config does not match the model:\n  " + "\n  ".join(errors)
                    + "\nBuild the model with the folder's settings (set the config keys named above)."
                )
        loaded = self._from_videomae(renamed, filename)
        report = loaded[_REPORT]
        report.source_format = f"Hugging Face transformers {kind} {filename}"
        report.notes[:0] = [f"transformers names renamed to VideoMAE's ({len(sd)} tensors; query/key/value fused into qkv)"]
        report.notes.extend(notes)
        loaded["__author__"] = "Hugging Face transformers"
        return loaded

    # ------------------------------------------------------------------ loading and reporting
    def _load_model(self, checkpoint: Dict[str, Any]) -> _IncompatibleKeys:
        fmt = checkpoint.pop(_FORMAT, FORMAT_EVAD_D2)
        report: Optional[ConversionReport] = checkpoint.pop(_REPORT, None)
        expected_prefixes = checkpoint.pop(_CHECK_PREFIXES, None)
        if report is not None:
            report.log(self.logger)
        sd = strip_prefix(checkpoint["model"], "module.")
        model_sd = self.model.state_dict()
        reinitialised = []
        if self.new_action_classes:
            reinitialised = [
                (k, tuple(sd[k].shape) if hasattr(sd.get(k), "shape") else None, tuple(model_sd[k].shape))
                for k in sorted(model_sd)
                if f".{ACTION_CLASSIFIER_LAYER}." in f".{k}"
            ]
            sd = {k: v for k, v in sd.items() if f".{ACTION_CLASSIFIER_LAYER}." not in f".{k}"}
        checkpoint["model"] = sd
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
        incompatible = super()._load_model(checkpoint)
        skipped = {k for k, _, _ in incompatible.incorrect_shapes}
        renewed = {k for k, _, _ in reinitialised}
        missing = [k for k in incompatible.missing_keys if k not in renewed]
        # A backbone checkpoint cannot hold the FPN or the heads: those are new, not missing.
        if expected_prefixes is not None:
            should_have = [k for k in missing if k.startswith(tuple(expected_prefixes))]
            new = [k for k in missing if k not in should_have]
        else:
            should_have, new = missing, []
        self.last_load = {
            "format": fmt,
            "report": report,
            # Names may have changed on the way (matching_heuristics): count what the model got.
            "loaded": sorted(set(model_sd) - set(missing) - skipped),
            "missing": sorted(should_have),
            "missing_expected": sorted(new),
            "unexpected": sorted(incompatible.unexpected_keys),
            "incorrect_shapes": list(incompatible.incorrect_shapes),
            # (key, checkpoint shape or None, model shape) of the action classifiers left at their
            # initialisation by new_action_classes.
            "reinitialised": reinitialised,
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
        if info["reinitialised"]:
            self.logger.info(
                f"{len(info['reinitialised'])} action-classifier tensors keep their initialisation "
                "(MODEL.EVAD.CHECKPOINT.NEW_ACTION_CLASSES): "
                + ", ".join(f"{k} (checkpoint {a}, model {b})" for k, a, b in info["reinitialised"])
            )
        if info["missing"]:
            self.logger.warning(get_missing_parameters_message(info["missing"]))
        if info["unexpected"]:
            self.logger.warning(get_unexpected_parameters_message(info["unexpected"]))
