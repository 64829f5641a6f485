"""Tiny configs and models, and their inputs (see :mod:`evad_d2.testing`)."""
import os
from typing import Tuple

import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from ..config import add_evad_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
"""The source checkout holding ``evad_d2/``, ``configs/``, ``tools/`` and ``datasets/``."""

TINY_CONFIG = os.path.join(REPO_ROOT, "configs", "tiny", "EVAD_tiny_test.yaml")
"""The smallest honest EVAD (same architecture, tiny widths; 8 frames, 64 px), for CPU tests."""

TINY_NUM_CLASSES = 6  # MODEL.EVAD.NUM_ACTION_CLASSES of TINY_CONFIG
TINY_NUM_PROPOSALS = 8  # MODEL.EVAD.LOC.NUM_PROPOSALS of TINY_CONFIG
TINY_CLIP = (8, 64, 96)  # (T, H, W) of the default random_clip
SHALLOW_TINY = (
    "MODEL.EVAD.DEPTH", "2", "MODEL.EVAD.FEATURE_LAYERS", "[0, 0, 1, 1]", "MODEL.EVAD.KEEP_RATES", "[0.7, 1.0]",
    "MODEL.EVAD.LOC.NUM_STAGES", "1", "MODEL.EVAD.DECODER.DEPTH", "1",
)
"""Overrides of :data:`TINY_CONFIG` making it shallower still, for tests whose time grows with the
graph (export, compile): 2 blocks, the first pruning to 0.7, one localization stage, one decoder layer."""


def tiny_cfg(*opts, keep_all_proposals: bool = False):
    """The detectron2 config of :data:`TINY_CONFIG` with ``opts`` (``KEY, VALUE, ...``) merged.

    keep_all_proposals: set ``MODEL.EVAD.LOC.SCORE_THRESH_TEST`` 0 (before ``opts``, which may
    override it), so that a model with random weights outputs every proposal for a test to check.
    """
    cfg = get_cfg()
    add_evad_config(cfg)
    cfg.merge_from_file(TINY_CONFIG)
    head = ["MODEL.EVAD.LOC.SCORE_THRESH_TEST", 0.0] if keep_all_proposals else []
    cfg.merge_from_list([*head, *opts])
    return cfg


def build_model_from_file(config_file: str, *opts, seed: int = 0, device: str = "cpu"):
    """The model of ``config_file`` + ``opts`` on ``device`` (``MODEL.DEVICE`` overridden), weights
    drawn after ``torch.manual_seed(seed)``, in evaluation mode. ``device="meta"``: built under
    ``torch.device("meta")`` (shapes only, no weights, no seeding)."""
    cfg = get_cfg()
    add_evad_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    cfg.MODEL.DEVICE = device
    if device == "meta":
        with torch.device("meta"):
            return build_model(cfg).eval()
    torch.manual_seed(seed)
    return build_model(cfg).eval()


def build_tiny_model(*opts, seed: int = 0, tame: bool = True):
    """The tiny model (:func:`tiny_cfg` + ``opts``) with weights drawn after
    ``torch.manual_seed(seed)``, in training mode (as ``build_model`` returns it).

    tame: scale the box-delta layers down by 10. At random init the tiny head's deltas are large
    enough that every stage-0 box can leave the image (seed 0 does), so later stages pool all-zero
    RoIs and inference outputs nothing; with small deltas the boxes stay near the whole-image
    proposals.
    """
    torch.manual_seed(seed)
    model = build_model(tiny_cfg(*opts))
    if tame:
        with torch.no_grad():
            for stage in model.localization_head.stages:
                stage.bboxes_delta.weight.mul_(0.1)
    return model


def evad_loss_names(num_stages: int, depth: int, deep_supervision: bool, linear: bool) -> set:
    """The loss names EVAD's training forward returns for ``num_stages`` localization stages and a
    decoder of ``depth`` layers (``linear``: the linear action head, which has no decoder layers)."""
    names = {"loss_ce", "loss_bbox", "loss_giou", "loss_action"}
    if deep_supervision:
        names |= {f"loss_{n}_stage{k}" for n in ("ce", "bbox", "giou") for k in range(num_stages - 1)}
        if not linear:
            names |= {f"loss_action_layer{k}" for k in range(depth - 1)}
    return names


def random_clip(h: int = TINY_CLIP[1], w: int = TINY_CLIP[2], t: int = TINY_CLIP[0], seed: int = 0) -> torch.Tensor:
    """(3, t, h, w) float clip, uniform in [0, 255), from its own generator seeded with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, t, h, w, generator=g) * 255


def gt_instances(boxes, actions, size: Tuple[int, int], num_classes: int = TINY_NUM_CLASSES) -> Instances:
    """Ground truth of one clip: ``gt_boxes`` (N, 4) XYXY pixels, ``gt_actions`` (N, num_classes)
    multi-hot, for an image of ``size`` (h, w)."""
    inst = Instances(size)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_actions = torch.tensor(actions, dtype=torch.float32).reshape(-1, num_classes)
    return inst


def training_input(h: int = TINY_CLIP[1], w: int = TINY_CLIP[2], num_persons: int = 1, seed: int = 0) -> dict:
    """One training input of the tiny model: ``{"clip": random_clip(h, w, seed=seed), "instances"}``
    with ``num_persons`` boxes of size (w/3, h/2) at random corners and random multi-hot actions
    (probability 0.4 each), drawn from a generator seeded with ``seed + 100``."""
    g = torch.Generator().manual_seed(seed + 100)
    boxes, actions = [], []
    for _ in range(num_persons):
        x1, y1 = float(torch.randint(0, w // 2, (1,), generator=g)), float(torch.randint(0, h // 2, (1,), generator=g))
        boxes.append([x1, y1, x1 + w / 3, y1 + h / 2])
        actions.append((torch.rand(TINY_NUM_CLASSES, generator=g) < 0.4).float().tolist())
    return {"clip": random_clip(h, w, seed=seed), "instances": gt_instances(boxes, actions, (h, w))}



def eager_outputs(model: torch.nn.Module, clip: torch.Tensor):
    """The eager model's inference on one (3, T, H, W) clip, as tensors: boxes (N, 4) XYXY pixels,
    person scores (N,), action scores (N, C); for comparing an exported graph with it."""
    with torch.no_grad():
        inst = model([{"clip": clip}])[0]["instances"]
    return inst.pred_boxes.tensor, inst.scores, inst.pred_action_scores

class Capture:
    """Records what a submodule returns on each call during the ``with`` block (``pre=True``: the
    positional inputs it is called with instead) in ``.calls``; the hook is removed on exit."""

    def __init__(self, module: torch.nn.Module, pre: bool = False):
        self.calls = []
        if pre:
            self.handle = module.register_forward_pre_hook(lambda m, args: self.calls.append(args))
        else:
            self.handle = module.register_forward_hook(lambda m, args, out: self.calls.append(out))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def randomise_weights(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter of ``model`` redrawn from N(0, 1) after ``torch.manual_seed(seed)`` (in
    place, so that two models differ in every weight); returns ``model``."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return model


def assert_same_weights(model: torch.nn.Module, state_dict) -> None:
    """Each entry of ``model.state_dict()`` equals ``state_dict``'s (tensors or numpy arrays) exactly."""
    for k, v in model.state_dict().items():
        assert torch.equal(v, torch.as_tensor(state_dict[k])), k
