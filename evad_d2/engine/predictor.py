"""Inference on one clip with a trained EVAD model (like detectron2's DefaultPredictor).

The predictor uses the model's own actor boxes (no separate person detector). It takes clips,
not videos: reading a video, choosing its keyframes and assembling their clips is
``evad_d2.data.video`` (the clip samplers) and ``evad_d2.demo.VideoDemo`` (a whole video).
"""

import logging
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.modeling import build_model
from detectron2.structures import Instances

from ..config_check import check_evad_cfg
from ..data.transforms import apply_transform_to_clip, sample_clip_transform
from ..data.video import resolve_keyframe_index
from .compilation import compile_model
from .precision import autocast_for, check_precision

# The project's checkpointer: VideoMAE and official EVAD weights too, and it never runs code from
# a weights file (no fallback to detectron2's, whose .pkl loader is pickle.load).
from ..checkpoint import EVADCheckpointer as _Checkpointer

__all__ = ["EVADPredictor"]

logger = logging.getLogger(__name__)

# Frame rate of the timeline models are trained on when the dataset metadata does not say (AVA).
DEFAULT_MODEL_FRAME_RATE = 30.0


def _dataset_classes(cfg, num_classes: int) -> Tuple[Optional[List[int]], Optional[List[str]], Optional[float]]:
    """(action_ids, action_classes, frame_rate) from the first test dataset's metadata, if usable."""
    for name in cfg.DATASETS.TEST:
        meta = MetadataCatalog.get(name)
        try:
            ids, names = list(meta.action_ids), list(meta.action_classes)
        except (AttributeError, OSError, ValueError) as e:  # e.g. the label map is not on this machine
            logger.info(f"No class names from dataset '{name}' ({e}); using generic names")
            continue
        if len(ids) != num_classes:
            logger.warning(f"dataset '{name}' has {len(ids)} classes but the model {num_classes}; using generic names")
            continue
        return ids, names, meta.get("frame_rate", None)
    return None, None, None


def _as_uint8(clip: torch.Tensor) -> torch.Tensor:
    """A clip of whole numbers in [0, 255] as uint8 (the official resize works on uint8 frames)."""
    if clip.is_floating_point() and not torch.equal(clip, clip.round()):
        raise ValueError(
            "MODEL.EVAD.OFFICIAL_MODE resizes uint8 frames as the official code does, but the clip has "
            "fractional values: pass the decoded uint8 frames"
        )
    if clip.numel() and (clip.min() < 0 or clip.max() > 255):
        raise ValueError(
            f"MODEL.EVAD.OFFICIAL_MODE needs pixels in [0, 255], got values in "
            f"[{float(clip.min()):g}, {float(clip.max()):g}]"
        )
    return clip.to(torch.uint8)


class EVADPredictor:
    """Create a simple end-to-end predictor with the given config that runs on one device for
    one clip (or a small batch of clips) of a keyframe.

    Compared to using the model directly, this class does the following additions:

    1. Check the config (also one built by hand, not via ``get_evad_cfg``), build the model in
       eval mode and load ``cfg.MODEL.WEIGHTS`` with the project's checkpointer (VideoMAE and
       official EVAD weights too; it never runs code from a weights file).
    2. Take uint8 RGB frames (T, H, W, 3) as decoded, and apply the test-time resize of
       ``cfg.INPUT.{MIN,MAX}_SIZE_TEST`` frame by frame (OpenCV's uint8 resize with
       ``MODEL.EVAD.OFFICIAL_MODE``), so memory follows the model's input size.
    3. Run under ``torch.inference_mode`` and, with ``precision`` "bf16"/"fp16", autocast;
       with ``compile`` (default ``cfg.TEST.COMPILE``), the backbone and heads ``torch.compile``d
       (``evad_d2.engine.compilation``: equal results; the first clip of each size compiles).
    4. Return the keyframe's actors with boxes in the input frame's pixels, on the CPU, by
       decreasing person score, each with its top-k actions named by the label map (class names
       and ids from ``class_names``/``action_ids`` if given, else from the metadata of
       ``cfg.DATASETS.TEST[0]``, else generic ``action_<id>`` with ids 1..C).

    This is meant for simple demo purposes, so it does the above steps automatically. It is not
    for videos: it does not decode, choose keyframes or assemble clips by time (use
    ``evad_d2.data.video.KeyframeClipSampler`` or ``evad_d2.demo.VideoDemo``), nor for
    evaluation (use ``train_net.py --eval-only``, which batches and evaluates on a dataset), nor
    for benchmarks. For anything more complicated, build and use the model as its source does.

    Attributes:
        model: the EVAD model (eval mode).
        action_ids, class_names: per model output column.
        num_frames, sampling_rate, keyframe_index: the clip layout.
        frame_rate: rate of the timeline the model was trained on (clip spacing in seconds is
            ``sampling_rate / frame_rate``).
        top_k: actions reported per actor.
        precision: "fp32", or "bf16"/"fp16" to run the model under autocast (outputs stay float32).
        compiled: whether the model's backbone and heads are compiled.
    """

    def __init__(
        self,
        cfg,
        *,
        top_k: int = 3,
        class_names: Optional[Sequence[str]] = None,
        action_ids: Optional[Sequence[int]] = None,
        frame_rate: Optional[float] = None,
        precision: str = "fp32",
        compile: Optional[bool] = None,
    ):
        check_precision(precision, "EVADPredictor precision")
        check_evad_cfg(cfg)  # a config built by hand (not via get_evad_cfg) is checked too
        self.precision = precision
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg)
        self.model.eval()
        if self.cfg.MODEL.WEIGHTS:
            _Checkpointer(self.model).load(self.cfg.MODEL.WEIGHTS)
        else:
            logger.warning("MODEL.WEIGHTS is empty: the predictor runs a randomly initialised model")
        # After loading: compiling in place keeps the state-dict keys.
        self.compiled = bool(self.cfg.TEST.COMPILE if compile is None else compile)
        if self.compiled:
            compile_model(self.model)
        self.augmentations = utils.build_augmentation(self.cfg, is_train=False)
        self.num_frames = self.cfg.INPUT.NUM_FRAMES
        self.sampling_rate = self.cfg.INPUT.SAMPLING_RATE
        self.keyframe_index = resolve_keyframe_index(self.cfg.INPUT.KEYFRAME_INDEX, self.num_frames)
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.top_k = top_k

        num_classes = self.cfg.MODEL.EVAD.NUM_ACTION_CLASSES
        meta_ids, meta_names, meta_rate = _dataset_classes(self.cfg, num_classes)
        ids = list(action_ids) if action_ids is not None else meta_ids or list(range(1, num_classes + 1))
        if class_names is not None:
            names = list(class_names)
        elif meta_names is not None and action_ids is None:
            names = meta_names
        else:
            names = [f"action_{i}" for i in ids]
        if len(ids) != num_classes or len(names) != num_classes:
            raise ValueError(
                f"the model has {num_classes} action classes (MODEL.EVAD.NUM_ACTION_CLASSES) but got "
                f"{len(ids)} action ids and {len(names)} class names"
            )
        self.action_ids, self.class_names = ids, names
        self.frame_rate = float(frame_rate or meta_rate or DEFAULT_MODEL_FRAME_RATE)

    # ------------------------------------------------------------------ clips
    def preprocess(self, clip: Union[np.ndarray, torch.Tensor]) -> Dict:
        """Model input for one clip.

        uint8 frames are resized before they become float, one frame at a time, so memory
        follows the model's input size, not the video's. With ``MODEL.EVAD.OFFICIAL_MODE`` the
        resize is OpenCV's uint8 bilinear (the official code's), which needs uint8 values: a
        float clip must then hold whole numbers in [0, 255].

        Args:
            clip: uint8 array (T, H, W, 3) RGB, or tensor (3, T, H, W) RGB in [0, 255].

        Returns:
            ``{"clip": (3, T, H', W') float tensor resized for testing, "height": H, "width": W}``.
        """
        if isinstance(clip, np.ndarray):
            if clip.ndim != 4 or clip.shape[-1] != 3:
                raise ValueError(f"a clip array must be (T, H, W, 3) RGB, got shape {clip.shape}")
            # A (3, T, H, W) view of the frames: nothing is copied at full resolution.
            tensor = torch.from_numpy(np.ascontiguousarray(clip)).permute(3, 0, 1, 2)
        elif isinstance(clip, torch.Tensor):
            if clip.dim() != 4 or clip.shape[0] != 3:
                raise ValueError(f"a clip tensor must be (3, T, H, W) RGB, got shape {tuple(clip.shape)}")
            tensor = clip
        else:
            raise TypeError(f"clip must be a numpy array or a torch tensor, got {type(clip).__name__}")
        t, h, w = tensor.shape[1:]
        if t != self.num_frames:
            raise ValueError(f"the model takes clips of {self.num_frames} frames (INPUT.NUM_FRAMES), got {t}")
        interpolation = "opencv" if self.cfg.MODEL.EVAD.OFFICIAL_MODE else "bilinear"
        if tensor.dtype != torch.uint8:
            tensor = tensor.float() if interpolation == "bilinear" else _as_uint8(tensor)
        tfm = sample_clip_transform(self.augmentations, h, w)
        return {"clip": apply_transform_to_clip(tfm, tensor, interpolation=interpolation), "height": h, "width": w}

    def predict_instances(self, clip: Union[np.ndarray, torch.Tensor]) -> Instances:
        """The model's raw output for one clip: Instances in the input frame's size, on the CPU."""
        return self._run([clip])[0]

    def _run(self, clips: Sequence[Union[np.ndarray, torch.Tensor]]) -> List[Instances]:
        """One forward of the model over ``clips`` (a batch); Instances on the CPU, in order."""
        inputs = [self.preprocess(c) for c in clips]
        with torch.inference_mode(), autocast_for(self.cfg.MODEL.DEVICE, self.precision):
            return [o["instances"].to("cpu") for o in self.model(inputs)]

    def predict_batch(self, clips: Sequence[Union[np.ndarray, torch.Tensor]]) -> List[List[Dict]]:
        """Actors of several clips' keyframes from one forward (as :meth:`__call__` gives them).

        Batching keyframes raises throughput on GPUs (the paper's speeds are at batch 8); clips
        of different sizes are padded as in training.
        """
        if not len(clips):
            return []
        return [self.instances_to_actors(inst) for inst in self._run(clips)]

    def __call__(self, clip: Union[np.ndarray, torch.Tensor]) -> List[Dict]:
        """Actors of the clip's keyframe, by decreasing person score.

        Returns:
            list of ``{"box": [x1, y1, x2, y2] (input frame pixels), "person_score": float,
            "actions": [(name, score)] top-k by score, "action_ids": the top-k label-map ids,
            "action_scores": all classes' scores in model column order}``.
        """
        return self.instances_to_actors(self.predict_instances(clip))

    def instances_to_actors(self, instances: Instances) -> List[Dict]:
        """The model's Instances of one clip as :meth:`__call__`'s actors, by decreasing person score."""
        scores = instances.scores.tolist()
        boxes = instances.pred_boxes.tensor.tolist()
        actions = instances.pred_action_scores.float().numpy()
        k = min(self.top_k, actions.shape[1]) if len(actions) else 0
        actors = []
        for i in sorted(range(len(scores)), key=lambda j: -scores[j]):
            top = np.argsort(-actions[i], kind="stable")[:k]
            actors.append(
                {
                    "box": [float(v) for v in boxes[i]],
                    "person_score": float(scores[i]),
                    "actions": [(self.class_names[c], float(actions[i, c])) for c in top],
                    "action_ids": [int(self.action_ids[c]) for c in top],
                    "action_scores": [float(v) for v in actions[i]],
                }
            )
        return actors
