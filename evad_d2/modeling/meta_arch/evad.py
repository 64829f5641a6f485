"""The EVAD detector (paper section 3): pruning ViT + simple FPN, query-based actor localization,
context-refinement action classification, set-prediction training, thresholded inference.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.structures import Boxes, ImageList, Instances
from torch import Tensor, nn

from ..backbone.contract import BackboneOutput, EVADBackbone, check_backbone
from ..heads import build_action_head, build_localization_head
from ..losses import SetCriterion
from ..postprocessing import detection_probabilities, keep_mask, rescale_boxes, select_detections

__all__ = ["EVAD", "OFFICIAL_MODE"]

# What MODEL.EVAD.OFFICIAL_MODE changes, to compute what the official EVAD code (MCG-NJU/EVAD)
# computes for its released checkpoints. Keys it turns on (their own values are then ignored):
OFFICIAL_MODE = {
    # The official decoder's token placement (see heads.action.official_token_positions).
    "MODEL.EVAD.DECODER.OFFICIAL_TOKEN_ORDER": True,
    # All proposals of a clip are output where none passes the threshold.
    "MODEL.EVAD.LOC.KEEP_ALL_IF_NONE": True,
}
# and, without keys of their own (the defaults are the right choice for our own models):
#   * person threshold: probability >= SCORE_THRESH_TEST (default: >);
#   * boxes clipped to [0, w-1] x [0, h-1] of the resized, unpadded clip, then scaled to the
#     requested output size and clamped to [0, W] x [0, H]; empty boxes are kept (default: clipped
#     to [0, w] x [0, h], detectron2's ``detector_postprocess``, which drops empty boxes);
#   * test-time resize: OpenCV's uint8 bilinear, rounded to uint8 before normalising (default:
#     torch's float bilinear); done where clips are prepared (``EVADPredictor``), see
#     ``evad_d2.data.transforms.resize_uint8_opencv``.


def _pad_clips(clips: List[Tensor], size_divisibility: int) -> ImageList:
    """(B, C, T, H, W) batch of (C, T, h_i, w_i) clips, zero-padded at the bottom and right to the
    largest h and w rounded up to ``size_divisibility``: ``ImageList.from_tensors`` computed from
    the shapes as Python ints, which torch.export can trace (detectron2's takes a max of tensors)."""
    d = max(size_divisibility, 1)
    h = -(-max(int(c.shape[-2]) for c in clips) // d) * d
    w = -(-max(int(c.shape[-1]) for c in clips) // d) * d
    batch = clips[0].new_zeros((len(clips), *clips[0].shape[:-2], h, w))
    for i, c in enumerate(clips):
        batch[i, ..., : c.shape[-2], : c.shape[-1]].copy_(c)
    return ImageList(batch, [(int(c.shape[-2]), int(c.shape[-1])) for c in clips])


@META_ARCH_REGISTRY.register()
class EVAD(nn.Module):
    """End-to-end video action detector.

    Input: a list of dicts, one per clip (see :meth:`forward`). Output in inference: one dict per
    clip with ``"instances"`` holding ``pred_boxes`` (in the requested ``height``/``width``),
    ``scores`` (person probability) and ``pred_action_scores`` ((N, num_classes) sigmoid).
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: EVADBackbone,
        localization_head: nn.Module,
        action_head: nn.Module,
        criterion: SetCriterion,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        score_thresh: float = 0.7,
        keep_all_if_none: bool = False,
        official_mode: bool = False,
    ):
        """
        Args:
            backbone: any backbone meeting the backbone contract (:class:`EVADBackbone`, checked
                here), e.g. the pruning ViT wrapped by the simple FPN (``ViTSimpleFPN``).
            localization_head: proposals -> per-stage person logits and boxes (a head of
                ``LOCALIZATION_HEAD_REGISTRY``; see its docstring for the call signature).
            action_head: actor boxes and tokens -> per-layer action logits (a head of
                ``ACTION_HEAD_REGISTRY``: the context refinement decoder, the linear baseline, ...).
            criterion: training losses.
            pixel_mean, pixel_std: per-channel normalisation of the input clip.
            score_thresh: person probability a proposal needs to be output.
            keep_all_if_none: output every proposal of a clip where none passes the threshold
                (the official code's behaviour; off by default: a clip may have no actor).
            official_mode: the official code's threshold (>=) and box clipping (see
                :data:`OFFICIAL_MODE`); ``from_config`` also turns on ``keep_all_if_none`` and the
                action head's official token order with it.
        """
        super().__init__()
        check_backbone(backbone)
        if not 0.0 <= score_thresh < 1.0:
            raise ValueError(f"MODEL.EVAD.LOC.SCORE_THRESH_TEST must be in [0, 1), got {score_thresh}")
        self.backbone = backbone
        self.localization_head = localization_head
        self.action_head = action_head
        self.criterion = criterion
        self.score_thresh = score_thresh
        self.keep_all_if_none = keep_all_if_none
        self.official_mode = bool(official_mode)
        # (C, 1, 1, 1): broadcast over (C, T, H, W) clips.
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1, 1), persistent=False)
        if self.pixel_mean.shape != self.pixel_std.shape:
            raise ValueError(f"MODEL.PIXEL_MEAN {pixel_mean} and MODEL.PIXEL_STD {pixel_std} differ in length")

    @classmethod
    def from_config(cls, cfg):
        if cfg.MODEL.EVAD.OFFICIAL_MODE:
            cfg = cfg.clone()
            cfg.defrost()
            cfg.merge_from_list([x for key_value in OFFICIAL_MODE.items() for x in key_value])
        backbone = build_backbone(cfg)
        return {
            "backbone": backbone,
            "localization_head": build_localization_head(cfg, backbone.output_shape()),
            "action_head": build_action_head(cfg),
            "criterion": SetCriterion(cfg),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "score_thresh": cfg.MODEL.EVAD.LOC.SCORE_THRESH_TEST,
            "keep_all_if_none": cfg.MODEL.EVAD.LOC.KEEP_ALL_IF_NONE,
            "official_mode": cfg.MODEL.EVAD.OFFICIAL_MODE,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_clips(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalise and pad the clips to the backbone's size divisibility (zeros after normalising)."""
        if not batched_inputs:
            raise ValueError("EVAD got an empty batch (no input dicts)")
        clips = []
        for i, x in enumerate(batched_inputs):
            clip = x.get("clip")
            if clip is None:
                raise KeyError(f"input {i} has no 'clip' entry (a (3, T, H, W) tensor)")
            if not isinstance(clip, torch.Tensor) or clip.dim() != 4 or clip.shape[0] != self.pixel_mean.shape[0]:
                shape = tuple(clip.shape) if isinstance(clip, torch.Tensor) else type(clip).__name__
                raise ValueError(f"input {i}: 'clip' must be a ({self.pixel_mean.shape[0]}, T, H, W) tensor, got {shape}")
            # Only H and W are padded; the frames of all clips are processed as one (B, C, T, ...) tensor.
            if clip.shape[1] != batched_inputs[0]["clip"].shape[1]:
                raise ValueError(
                    f"input {i}: clip has {clip.shape[1]} frames but input 0 has "
                    f"{batched_inputs[0]['clip'].shape[1]}; all clips of a batch need the same T"
                )
            clips.append((clip.to(self.device, torch.float32) - self.pixel_mean) / self.pixel_std)
        return _pad_clips(clips, self.backbone.size_divisibility)

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: one dict per clip with
                * "clip": (3, T, H, W) tensor, RGB in the range of MODEL.PIXEL_MEAN/STD ([0, 255]);
                * "height", "width" (optional): output size of the predicted boxes;
                * "instances" (training): ``gt_boxes`` (abs XYXY in the clip) and ``gt_actions``
                  ((N, num_classes) float multi-hot).

        Returns:
            training: dict of losses; inference: list of {"instances": Instances}.
        """
        images = self.preprocess_clips(batched_inputs)
        # Targets first: a malformed input fails before the (expensive) network runs.
        targets = self.prepare_targets(batched_inputs, images) if self.training else None
        loc_outputs, action_logits = self.run_network(images)
        if self.training:
            self._check_action_targets(targets, action_logits[-1].shape[-1])
            return self.criterion(loc_outputs, action_logits, targets)
        sizes = [(int(h), int(w)) for h, w in images.image_sizes]
        results = self.inference(loc_outputs[-1], action_logits[-1], sizes)
        return self.postprocess(results, batched_inputs, sizes)

    def run_network(self, images: ImageList) -> Tuple[List[Dict[str, Tensor]], List[Tensor]]:
        """Backbone, neck and both heads on a preprocessed batch.

        Returns:
            per localization stage {"pred_logits" (B, n, 2), "pred_boxes" (B, n, 4)}, and per
            decoder layer action logits (B, n, C); the last ones are the final outputs.
        """
        out = self.backbone(images.tensor)
        if not isinstance(out, BackboneOutput):
            raise TypeError(
                f"EVAD's backbone {type(self.backbone).__name__} returned {type(out).__name__}, not a BackboneOutput "
                "(see evad_d2/modeling/backbone/contract.py)"
            )
        # int(): an ImageList made elsewhere may hold 0-d tensors; sizes are constants of a traced graph.
        sizes = [(int(h), int(w)) for h, w in images.image_sizes]
        image_sizes = torch.tensor(sizes, device=self.device, dtype=torch.float32)
        loc_outputs, _ = self.localization_head(out.features, image_sizes)
        boxes = loc_outputs[-1]["pred_boxes"].detach()
        action_logits = self.action_head(out.tokens, out.token_index, out.token_grid, boxes, image_sizes)
        return loc_outputs, action_logits

    def prepare_targets(self, batched_inputs: List[Dict], images: ImageList) -> List[Dict]:
        targets = []
        for i, (x, size) in enumerate(zip(batched_inputs, images.image_sizes)):
            if "instances" not in x:
                raise KeyError(f"training input {i} has no 'instances' (gt_boxes, gt_actions)")
            inst = x["instances"].to(self.device)
            if not inst.has("gt_actions"):
                raise KeyError(f"training input {i}: instances need 'gt_actions' (multi-hot action labels)")
            targets.append({"boxes": inst.gt_boxes.tensor, "actions": inst.gt_actions.float(), "image_size": size})
        return targets

    @staticmethod
    def _check_action_targets(targets: List[Dict], num_classes: int) -> None:
        for i, t in enumerate(targets):
            if t["actions"].dim() != 2 or t["actions"].shape[1] != num_classes:
                raise ValueError(
                    f"training input {i}: instances.gt_actions has shape {tuple(t['actions'].shape)}, expected "
                    f"(N, {num_classes}) (MODEL.EVAD.NUM_ACTION_CLASSES = {num_classes})"
                )

    def keep_mask(self, person: Tensor) -> Tensor:
        """(n,) proposals of one clip that are output, from their (n,) person probabilities: the
        model's threshold and mode applied by :func:`~evad_d2.modeling.postprocessing.keep_mask`."""
        return keep_mask(person, self.score_thresh, official=self.official_mode, keep_all_if_none=self.keep_all_if_none)

    def inference(self, loc_output: Dict[str, Tensor], action_logits: Tensor, image_sizes) -> List[Instances]:
        """Per clip, the proposals that :meth:`keep_mask` keeps, boxes clipped to the clip's
        unpadded size (:func:`~evad_d2.modeling.postprocessing.select_detections`).

        Args:
            loc_output: the last localization stage ("pred_logits" (B, n, 2), "pred_boxes" (B, n, 4)).
            action_logits: (B, n, C) of the action head's last layer.
            image_sizes: B unpadded (h, w).
        """
        person, pred_boxes, actions = detection_probabilities(loc_output, action_logits)
        results = []
        for b, size in enumerate(image_sizes):
            boxes, scores, action_scores = select_detections(
                person[b], pred_boxes[b], actions[b], size,
                score_thresh=self.score_thresh, official=self.official_mode, keep_all_if_none=self.keep_all_if_none,
            )
            inst = Instances(tuple(size))
            inst.pred_boxes = Boxes(boxes)
            inst.scores = scores
            inst.pred_action_scores = action_scores
            results.append(inst)
        return results

    def postprocess(self, instances: List[Instances], batched_inputs: List[Dict], image_sizes) -> List[Dict]:
        """Rescale boxes to each input's requested output size (default: the clip's own size) with
        :func:`~evad_d2.modeling.postprocessing.rescale_boxes`: scale, clip to the output size and,
        by default, drop empty boxes (as detectron2's ``detector_postprocess``); official mode keeps
        every box."""
        processed = []
        for inst, x, size in zip(instances, batched_inputs, image_sizes):
            out_size = (x.get("height", size[0]), x.get("width", size[1]))
            boxes = inst.pred_boxes.tensor
            if not self.official_mode and not torch.isfinite(boxes).all():
                # What detectron2's Boxes.clip asserts: a diverged model, not boxes to drop quietly.
                raise FloatingPointError(f"EVAD predicted non-finite boxes for input {len(processed)}")
            boxes, keep = rescale_boxes(boxes, size, out_size, official=self.official_mode)
            out = Instances(out_size, **inst.get_fields())
            out.pred_boxes = Boxes(boxes)
            processed.append({"instances": out if self.official_mode else out[keep]})
        return processed

    def set_keep_rates(self, keep_rates: Optional[Sequence[float]]) -> None:
        """Change the encoder's per-block keep rates at inference (no retraining; paper Fig. 5).

        Args:
            keep_rates: one rate in (0, 1] per encoder block; None disables pruning (all 1.0).
        """
        if keep_rates is None:
            keep_rates = [1.0] * self.backbone.num_layers
        self.backbone.set_keep_rates(keep_rates)
