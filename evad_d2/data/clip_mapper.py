"""Turn one keyframe's dataset dict into the model's clip input."""
import logging
from typing import List, Optional, Sequence

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import Boxes, BoxMode, Instances

from .bad_samples import BadSampleCounter
from .transforms import apply_transform_to_clip, clip_output_size, color_jitter_clip, sample_clip_transform
from .video import VideoReadError, clip_frame_indices, read_frame_folder, read_video_frames, resolve_keyframe_index

__all__ = ["ClipDatasetMapper"]

logger = logging.getLogger(__name__)


class ClipDatasetMapper:
    """Read the T frames around a keyframe, augment them as one, and build the targets.

    Input: a dataset dict with ``frame_index``, ``num_frames``, ``frame_rate``, ``height``,
    ``width``, ``video_id``, ``timestamp``, and either ``video_path`` or ``frame_dir`` +
    ``frame_pattern`` (see ``evad_d2.data.datasets.ava``).

    Output::

        "clip":       float tensor (3, T, H', W'), RGB in [0, 255], H'/W' after resizing
        "height", "width":  the original keyframe size (predictions are rescaled to it)
        "video_id", "timestamp"
        "instances":  training only; Instances((H', W')) with gt_boxes (Boxes, abs XYXY in the
                      resized clip) and gt_actions (float (N, C) multi-hot, column i = action_ids[i])
        "proposals":  when the dict has proposals: Instances((H', W')) with proposal_boxes and scores

    Frames are ``sampling_rate`` apart with the keyframe at position ``keyframe_index``; frames
    before the start or after the end of the video repeat the first/last frame. Geometric
    augmentation (resize, flip) is drawn once per clip and applied to all frames and boxes.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: Sequence[T.Augmentation],
        num_frames: int,
        sampling_rate: int,
        keyframe_index: int = -1,
        action_ids: Optional[Sequence[int]] = None,
        color_jitter: float = 0.0,
        skip_bad_samples: bool = False,
        interpolation: str = "bilinear",
    ):
        """
        Args:
            is_train: build training targets and apply random augmentation.
            augmentations: detectron2 augmentations that only use the image size (resize, flip).
            num_frames: T.
            sampling_rate: tau, the stride between sampled frames.
            keyframe_index: position of the keyframe in the clip; -1 for the middle frame
                (``evad_d2.data.video.resolve_keyframe_index``).
            action_ids: label-map ids in model column order; required for training.
            color_jitter: colour jitter strength (training only; 0 disables).
            skip_bad_samples: on an unreadable video/frame (decoding error, truncated video,
                missing or corrupt image, frames of another size), log it through the ``evad_d2``
                logger, count it in :attr:`bad_samples` (shared with the loader workers) and return
                None (``RetryMapDataset`` or detectron2's loader then draws another sample) instead
                of raising. Training only: an evaluation that skipped keyframes would report a
                different metric.
            interpolation: the resize's, one of ``evad_d2.data.transforms.INTERPOLATIONS``
                ("opencv": the official code's uint8 resize, with MODEL.EVAD.OFFICIAL_MODE).
        """
        keyframe_index = resolve_keyframe_index(keyframe_index, num_frames)
        if is_train and not action_ids:
            raise ValueError("training needs action_ids (the label-map ids in model column order)")
        if skip_bad_samples and not is_train:
            raise ValueError("skip_bad_samples is for training only: evaluating without the bad keyframes changes the metric")
        self.is_train = is_train
        self.augmentations = list(augmentations)
        self.num_frames = num_frames
        self.sampling_rate = sampling_rate
        self.keyframe_index = keyframe_index
        self.action_ids = list(action_ids) if action_ids else None
        self._column = {aid: i for i, aid in enumerate(self.action_ids or [])}
        self.color_jitter = color_jitter if is_train else 0.0
        self.skip_bad_samples = skip_bad_samples
        self.interpolation = interpolation
        self.num_skipped = 0  # in this process
        self.bad_samples = BadSampleCounter() if skip_bad_samples else None  # in all processes
        logger.info(
            f"ClipDatasetMapper(is_train={is_train}): {num_frames}x{sampling_rate} frames, keyframe at "
            f"{keyframe_index}, augmentations {self.augmentations}, colour jitter {self.color_jitter}"
        )

    @classmethod
    def from_config(cls, cfg, is_train: bool = True, dataset_name: Optional[str] = None):
        """``dataset_name`` (default: the first of DATASETS.TRAIN or TEST) supplies ``action_ids``."""
        if dataset_name is None:
            names = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
            dataset_name = names[0] if len(names) else None
        action_ids = None
        if dataset_name is not None:
            action_ids = MetadataCatalog.get(dataset_name).get("action_ids")
        if is_train:
            if action_ids is None:
                raise ValueError(f"dataset {dataset_name!r} has no 'action_ids' metadata; cannot build gt_actions")
            if len(action_ids) != cfg.MODEL.EVAD.NUM_ACTION_CLASSES:
                raise ValueError(
                    f"dataset {dataset_name!r} has {len(action_ids)} action classes but "
                    f"MODEL.EVAD.NUM_ACTION_CLASSES = {cfg.MODEL.EVAD.NUM_ACTION_CLASSES}"
                )
        return {
            "is_train": is_train,
            # ResizeShortestEdge from INPUT.MIN/MAX_SIZE_*, plus RandomFlip (INPUT.RANDOM_FLIP) in training.
            "augmentations": utils.build_augmentation(cfg, is_train),
            "num_frames": cfg.INPUT.NUM_FRAMES,
            "sampling_rate": cfg.INPUT.SAMPLING_RATE,
            "keyframe_index": cfg.INPUT.KEYFRAME_INDEX,
            "action_ids": action_ids,
            "color_jitter": cfg.INPUT.COLOR_JITTER,
            "skip_bad_samples": is_train and cfg.DATASETS.AVA.SKIP_BAD_SAMPLES,
            "interpolation": "opencv" if cfg.MODEL.EVAD.OFFICIAL_MODE else "bilinear",
        }

    def frame_indices(self, dataset_dict: dict) -> List[int]:
        """The clip's frame indices on the dataset timeline (keyframe at ``keyframe_index``)."""
        return clip_frame_indices(
            dataset_dict["frame_index"], self.num_frames, self.sampling_rate, self.keyframe_index,
            dataset_dict["num_frames"],
        )

    def read_frames(self, dataset_dict: dict) -> np.ndarray:
        """uint8 (T, H, W, 3) RGB frames of the clip."""
        indices = self.frame_indices(dataset_dict)
        if "video_path" in dataset_dict:
            return read_video_frames(dataset_dict["video_path"], indices, frame_rate=dataset_dict.get("frame_rate", 30))
        return read_frame_folder(dataset_dict["frame_dir"], dataset_dict["frame_pattern"], indices)

    def read_checked_frames(self, dataset_dict: dict) -> np.ndarray:
        """``read_frames``, checking that the frames have the size the dataset dict says."""
        frames = self.read_frames(dataset_dict)
        h, w = frames.shape[1:3]
        if (h, w) != (dataset_dict["height"], dataset_dict["width"]):
            raise VideoReadError(
                dataset_dict.get("video_path") or dataset_dict["frame_dir"],
                f"frames are {w}x{h} but the dataset says {dataset_dict['width']}x{dataset_dict['height']}",
            )
        return frames

    def __call__(self, dataset_dict: dict) -> Optional[dict]:
        try:
            frames = self.read_checked_frames(dataset_dict)
        except VideoReadError as e:
            if not self.skip_bad_samples:
                raise
            self.num_skipped += 1
            total = self.bad_samples.add()
            logger.warning(
                f"Skipping bad sample {dataset_dict['video_id']}@{dataset_dict['timestamp']} "
                f"({total} skipped so far): {e}"
            )
            return None
        h, w = frames.shape[1:3]
        tfm = sample_clip_transform(self.augmentations, h, w)
        # (T, H, W, 3) uint8 -> (3, T, H, W) uint8 view; resized frame by frame into float.
        clip = torch.from_numpy(frames).permute(3, 0, 1, 2)
        if self.interpolation == "opencv":
            # The official order: resize the uint8 frames, then colour.
            clip = color_jitter_clip(apply_transform_to_clip(tfm, clip, interpolation="opencv"), self.color_jitter)
        else:
            if self.color_jitter > 0:
                # Colour first: per-pixel affine maps commute with resampling up to clamping, and
                # the original frames are usually the smaller tensor here.
                clip = color_jitter_clip(clip.contiguous().float(), self.color_jitter)
            clip = apply_transform_to_clip(tfm, clip)
        out_h, out_w = clip_output_size(tfm, h, w)

        out = {
            "clip": clip,
            "height": dataset_dict["height"],
            "width": dataset_dict["width"],
            "video_id": dataset_dict["video_id"],
            "timestamp": dataset_dict["timestamp"],
        }
        if self.is_train:
            out["instances"] = self._targets(dataset_dict, tfm, (out_h, out_w))
        if "proposals" in dataset_dict:
            props = Instances((out_h, out_w))
            boxes = tfm.apply_box(np.asarray(dataset_dict["proposals"]["boxes"], dtype=np.float32).reshape(-1, 4))
            props.proposal_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4))
            props.proposal_boxes.clip((out_h, out_w))
            props.scores = torch.as_tensor(np.asarray(dataset_dict["proposals"]["scores"], dtype=np.float32))
            out["proposals"] = props
        return out

    def _targets(self, dataset_dict: dict, tfm: T.Transform, image_size) -> Instances:
        anns = dataset_dict.get("annotations", [])
        boxes = np.array(
            [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns], dtype=np.float32
        ).reshape(-1, 4)
        boxes = tfm.apply_box(boxes)
        actions = torch.zeros((len(anns), len(self.action_ids)), dtype=torch.float32)
        for i, a in enumerate(anns):
            for aid in a["action_ids"]:
                col = self._column.get(aid)
                if col is None:
                    raise ValueError(
                        f"{dataset_dict['video_id']}@{dataset_dict['timestamp']}: action id {aid} is not one of the "
                        f"model's classes {self.action_ids}"
                    )
                actions[i, col] = 1.0
        instances = Instances(image_size)
        instances.gt_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        instances.gt_boxes.clip(image_size)
        instances.gt_actions = actions
        # A box that resizing and clipping squeezed to nothing cannot be a target.
        return instances[instances.gt_boxes.nonempty(threshold=1e-3)]
