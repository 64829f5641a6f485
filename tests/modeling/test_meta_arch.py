"""The EVAD meta-architecture end to end on the tiny CPU config (issue 3, "Done when").

Losses and gradients per configuration, inference outputs and thresholds, overfitting one clip,
batches of mixed sizes and person counts, input errors, inference-time keep rates, normalisation.
"""
import contextlib

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import configurable, get_cfg
from detectron2.modeling import build_model
from detectron2.modeling.poolers import assign_boxes_to_levels
from detectron2.structures import Boxes, ImageList, Instances, pairwise_iou

from torch import nn

from evad_d2.config import ConfigValueError, add_evad_config, get_evad_cfg
from evad_d2.modeling import EVAD
from evad_d2.modeling.heads import ACTION_HEAD_REGISTRY, LOCALIZATION_HEAD_REGISTRY

TINY_CONFIG = "configs/tiny/EVAD_tiny_test.yaml"
NUM_CLASSES = 6  # MODEL.EVAD.NUM_ACTION_CLASSES of the tiny config
NUM_PROPOSALS = 8  # MODEL.EVAD.LOC.NUM_PROPOSALS of the tiny config
T, H, W = 8, 64, 96


def tiny_cfg(*overrides):
    cfg = get_cfg()
    add_evad_config(cfg)
    cfg.merge_from_file(TINY_CONFIG)
    cfg.merge_from_list(list(overrides))
    return cfg


def build(*overrides, seed=0, tame=True):
    """The tiny model with fixed weights.

    tame: scale the box-delta layers down. At random init the tiny head's deltas are large enough
    that every stage-0 box can leave the image (seed 0 does), so later stages pool all-zero RoIs and
    inference outputs nothing; with small deltas the boxes stay near the whole-image proposals.
    """
    torch.manual_seed(seed)
    model = build_model(tiny_cfg(*overrides))
    if tame:
        with torch.no_grad():
            for stage in model.localization_head.stages:
                stage.bboxes_delta.weight.mul_(0.1)
    return model


def random_clip(h=H, w=W, t=T, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, t, h, w, generator=g) * 255


def gt_instances(boxes, actions, size):
    inst = Instances(size)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_actions = torch.tensor(actions, dtype=torch.float32).reshape(-1, NUM_CLASSES)
    return inst


def training_input(h=H, w=W, num_persons=1, seed=0):
    g = torch.Generator().manual_seed(seed + 100)
    boxes, actions = [], []
    for _ in range(num_persons):
        x1, y1 = float(torch.randint(0, w // 2, (1,), generator=g)), float(torch.randint(0, h // 2, (1,), generator=g))
        boxes.append([x1, y1, x1 + w / 3, y1 + h / 2])
        actions.append((torch.rand(NUM_CLASSES, generator=g) < 0.4).float().tolist())
    return {"clip": random_clip(h, w, seed=seed), "instances": gt_instances(boxes, actions, (h, w))}


class Capture:
    """Records the outputs of a submodule during a forward (a detached copy of each call)."""

    def __init__(self, module, pre=False):
        self.calls = []
        if pre:
            self.handle = module.register_forward_pre_hook(lambda m, args: self.calls.append(args))
        else:
            self.handle = module.register_forward_hook(lambda m, args, out: self.calls.append(out))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def expected_loss_names(num_stages, depth, deep_supervision, linear):
    names = {"loss_ce", "loss_bbox", "loss_giou", "loss_action"}
    if deep_supervision:
        names |= {f"loss_{n}_stage{k}" for n in ("ce", "bbox", "giou") for k in range(num_stages - 1)}
        if not linear:
            names |= {f"loss_action_layer{k}" for k in range(depth - 1)}
    return names


def unsupervised_parameters(model, deep_supervision):
    """Parameters that no loss reaches: without deep supervision, the heads of the earlier stages
    and decoder layers, and the initial proposal boxes (the stages see each other's boxes detached,
    so only stage 0's box losses reach them, as in Sparse R-CNN)."""
    if deep_supervision:
        return set()
    names = {"localization_head.init_proposal_boxes.weight"}
    heads = ("class_logits", "bboxes_delta", "cls_module", "reg_module")
    for k, stage in enumerate(model.localization_head.stages[:-1]):
        names |= {f"localization_head.stages.{k}.{n}" for n, _ in stage.named_parameters() if n.startswith(heads)}
    classifiers = getattr(model.action_head, "classifiers", [])
    for k, classifier in enumerate(classifiers[:-1]):
        names |= {f"action_head.classifiers.{k}.{n}" for n, _ in classifier.named_parameters()}
    return names


def fpn_output_levels_used(pooler_calls, pooler):
    """FPN levels (2..5) that received at least one box in any localization stage."""
    used = set()
    for maps, box_lists in pooler_calls:
        levels = assign_boxes_to_levels(
            box_lists, pooler.min_level, pooler.max_level, pooler.canonical_box_size, pooler.canonical_level
        )
        used |= {pooler.min_level + int(level) for level in levels.unique()}
    return used


# ------------------------------------------------------------------------------------------ training


@pytest.mark.parametrize(
    "head, num_stages, depth, deep",
    [("decoder", 2, 2, True), ("decoder", 3, 3, False), ("decoder", 3, 1, True), ("linear", 2, 2, True)],
)
def test_training_losses_and_gradients(head, num_stages, depth, deep):
    model = build(
        "MODEL.EVAD.ACTION_HEAD", head, "MODEL.EVAD.LOC.NUM_STAGES", num_stages,
        "MODEL.EVAD.DECODER.DEPTH", depth, "MODEL.EVAD.LOSS.DEEP_SUPERVISION", deep,
    ).train()
    batch = [training_input(num_persons=2, seed=0), training_input(num_persons=1, seed=1)]
    with Capture(model.localization_head.pooler, pre=True) as pooled:
        losses = model(batch)

    assert set(losses) == expected_loss_names(num_stages, depth, deep, head == "linear")
    for name, value in losses.items():
        assert value.dim() == 0 and torch.isfinite(value) and value >= 0, (name, value)
    # Every weighted term of a random model on clips with persons is strictly positive.
    assert all(value > 0 for value in losses.values()), losses

    sum(losses.values()).backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    no_grad = {n for n, p in trainable.items() if p.grad is None}
    assert no_grad == unsupervised_parameters(model, deep), f"parameters without gradient: {sorted(no_grad)}"
    trainable = {n: p for n, p in trainable.items() if n not in no_grad}
    zero_grad = {n for n, p in trainable.items() if not p.grad.abs().sum() > 0}
    # The only parameters allowed a zero gradient: output convs of FPN levels that the pooler's
    # box-size rule (canonical 224 px at p4) gave no box; on 64x96 clips every box goes to p2.
    used = fpn_output_levels_used(pooled.calls, model.localization_head.pooler)
    unused = [lvl for lvl in range(2, 6) if lvl not in used]
    assert zero_grad == {f"backbone.fpn_output{lvl}.{p}" for lvl in unused for p in ("weight", "bias")}
    assert len(pooled.calls) == num_stages


def test_deep_supervision_adds_terms_without_changing_last_stage_losses():
    on = build().train()
    off = build("MODEL.EVAD.LOSS.DEEP_SUPERVISION", False).train()
    off.load_state_dict(on.state_dict())
    batch = [training_input(num_persons=2, seed=3)]
    losses_on, losses_off = on(batch), off(batch)
    assert set(losses_off) == {"loss_ce", "loss_bbox", "loss_giou", "loss_action"}
    for name, value in losses_off.items():
        torch.testing.assert_close(value, losses_on[name], rtol=1e-5, atol=1e-6)


def test_clip_without_persons_has_only_background_loss():
    """Hand-computed: all proposals are no-object, so CE = 2 * mean(-log p_no-object), the rest 0."""
    model = build().train()
    empty = {"clip": random_clip(), "instances": gt_instances([], [], (H, W))}
    with Capture(model.localization_head) as loc:
        losses = model([empty])
    stage_outputs = loc.calls[0][0]
    for k, out in enumerate(stage_outputs):
        suffix = "" if k == len(stage_outputs) - 1 else f"_stage{k}"
        expected = 2.0 * (-F.log_softmax(out["pred_logits"], -1)[..., 1]).mean()
        torch.testing.assert_close(losses["loss_ce" + suffix], expected)
        assert losses["loss_bbox" + suffix] == 0 and losses["loss_giou" + suffix] == 0
    assert losses["loss_action"] == 0 and losses["loss_action_layer0"] == 0


# ------------------------------------------------------------------------------------------ inference


def run_inference(model, inputs):
    """(results, last-stage person probabilities (B, n), last-layer action logits (B, n, C))."""
    with torch.no_grad(), Capture(model.localization_head) as loc, Capture(model.action_head) as act:
        results = model(inputs)
    person = loc.calls[0][0][-1]["pred_logits"].softmax(-1)[..., 0]
    return results, person, act.calls[0][-1]


def test_inference_outputs_are_rescaled_and_consistent_with_the_heads():
    model = build().eval()
    model.score_thresh = 0.0
    clip = random_clip(seed=5)
    native, person, logits = run_inference(model, [{"clip": clip}])
    scaled, _, _ = run_inference(model, [{"clip": clip, "height": 2 * H, "width": 3 * W // 2}])
    native, scaled = native[0]["instances"], scaled[0]["instances"]

    assert native.image_size == (H, W) and scaled.image_size == (2 * H, 3 * W // 2)
    assert len(native) == len(scaled) == NUM_PROPOSALS  # threshold 0: every (non-empty) box
    for inst, (h, w) in ((native, (H, W)), (scaled, (2 * H, 3 * W // 2))):
        b = inst.pred_boxes.tensor
        assert b.shape == (NUM_PROPOSALS, 4)
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert ((inst.scores >= 0) & (inst.scores <= 1)).all()
        assert inst.pred_action_scores.shape == (NUM_PROPOSALS, NUM_CLASSES)
        assert ((inst.pred_action_scores >= 0) & (inst.pred_action_scores <= 1)).all()
    torch.testing.assert_close(scaled.pred_boxes.tensor, native.pred_boxes.tensor * torch.tensor([1.5, 2.0, 1.5, 2.0]))
    # Scores are the last stage's person probabilities, action scores the last layer's sigmoid.
    torch.testing.assert_close(native.scores, person[0])
    torch.testing.assert_close(native.pred_action_scores, logits[0].sigmoid())
    torch.testing.assert_close(scaled.scores, native.scores)


def test_score_threshold_selects_a_superset_when_lowered():
    model = build().eval()
    inputs = [{"clip": random_clip(seed=6), "height": 2 * H, "width": 2 * W}]
    model.score_thresh = 0.0
    _, person, _ = run_inference(model, inputs)
    probs = person[0].sort().values
    # Thresholds between observed probabilities: 6 and 3 proposals pass (no ties at random init).
    low, high = (probs[1] + probs[2]) / 2, (probs[4] + probs[5]) / 2
    out = {}
    for name, thresh in (("low", low), ("high", high)):
        model.score_thresh = float(thresh)
        out[name] = model(inputs)[0]["instances"]
        assert (out[name].scores > thresh).all()
    assert len(out["low"]) == 6 and len(out["high"]) == 3
    low_rows = {tuple(r) for r in out["low"].pred_boxes.tensor.tolist()}
    assert {tuple(r) for r in out["high"].pred_boxes.tensor.tolist()} <= low_rows


def test_keep_all_if_none():
    model = build().eval()
    inputs = [{"clip": random_clip(seed=7)}]
    model.score_thresh = 0.0
    everything, person, _ = run_inference(model, inputs)
    best = person.max().item()
    model.score_thresh = (best + 1.0) / 2  # nothing passes
    none = model(inputs)[0]["instances"]
    assert len(none) == 0
    assert none.pred_boxes.tensor.shape == (0, 4) and none.scores.shape == (0,)
    assert none.pred_action_scores.shape == (0, NUM_CLASSES)
    model.keep_all_if_none = True
    kept = model(inputs)[0]["instances"]
    assert len(kept) == NUM_PROPOSALS
    torch.testing.assert_close(kept.pred_boxes.tensor, everything[0]["instances"].pred_boxes.tensor)


def test_inference_options_come_from_the_config():
    model = build("MODEL.EVAD.LOC.SCORE_THRESH_TEST", 0.4, "MODEL.EVAD.LOC.KEEP_ALL_IF_NONE", True)
    assert isinstance(model, EVAD) and model.score_thresh == 0.4 and model.keep_all_if_none
    with pytest.raises(ValueError, match="SCORE_THRESH_TEST"):
        build("MODEL.EVAD.LOC.SCORE_THRESH_TEST", 1.0)


# ------------------------------------------------------------------------------------------ overfitting


# ---------------------------------------------------------------- official-checkpoint mode
def _outputs(boxes, person_probs, num_classes=NUM_CLASSES):
    """Last-stage outputs for one clip with the given boxes (n, 4) and person probabilities."""
    p = torch.tensor(person_probs, dtype=torch.float32)
    loc = {"pred_logits": torch.stack([p.log(), (1 - p).log()], -1)[None], "pred_boxes": torch.tensor(boxes)[None]}
    return loc, torch.zeros(1, len(person_probs), num_classes)


# A 64x96 clip (h, w): a box past every border, one inside, one left of the image (empty once clipped).
CLIP_BOXES = [[-3.0, -2.0, 100.0, 70.0], [10.0, 20.0, 30.0, 40.0], [-9.0, 5.0, -1.0, 9.0]]


@pytest.mark.parametrize(
    "official, native, rescaled",
    [
        # Default: clip to [0, w] x [0, h], detectron2's detector_postprocess drops the empty box.
        (False, [[0, 0, 96, 64], [10, 20, 30, 40]], [[0, 0, 192, 96], [20, 30, 60, 60]]),
        # Official: clip to [0, w-1] x [0, h-1], scale to the output size (x2, x1.5), keep the empty box.
        (True, [[0, 0, 95, 63], [10, 20, 30, 40], [0, 5, 0, 9]], [[0, 0, 190, 94.5], [20, 30, 60, 60], [0, 7.5, 0, 13.5]]),
    ],
)
def test_box_clipping_of_each_mode(official, native, rescaled):
    model = build("MODEL.EVAD.OFFICIAL_MODE", official).eval()
    model.score_thresh = 0.5
    loc, logits = _outputs(CLIP_BOXES, [0.9, 0.8, 0.95])
    for request, expected in (({}, native), ({"height": 96, "width": 192}, rescaled)):
        results = model.postprocess(model.inference(loc, logits, [(H, W)]), [request], [(H, W)])
        inst = results[0]["instances"]
        assert inst.image_size == ((96, 192) if request else (H, W))
        torch.testing.assert_close(inst.pred_boxes.tensor, torch.tensor(expected, dtype=torch.float32))
        assert len(inst.scores) == len(inst.pred_action_scores) == len(expected)


@pytest.mark.parametrize("official, kept", [(False, [False, False, True]), (True, [False, True, True])])
def test_person_threshold_at_exactly_the_threshold(official, kept):
    model = build("MODEL.EVAD.OFFICIAL_MODE", official).eval()
    assert model.score_thresh == 0.7
    # float32(0.7) is what a probability of 0.7 is; the official code keeps it (>=), ours does not (>).
    person = torch.tensor([0.6999999, 0.7, 0.7000001], dtype=torch.float32)
    assert person[0] < person[1] < person[2]
    assert model.keep_mask(person).tolist() == kept


def test_official_mode_keeps_all_proposals_when_none_passes():
    model = build("MODEL.EVAD.OFFICIAL_MODE", True).eval()
    loc, logits = _outputs(CLIP_BOXES, [0.1, 0.2, 0.3])
    (inst,) = model.inference(loc, logits, [(H, W)])
    assert len(inst) == 3
    torch.testing.assert_close(inst.scores, torch.tensor([0.1, 0.2, 0.3]))


def moving_rectangles_clip(boxes, seed=0):
    """Noise with one bright rectangle per box, moving 2 px per frame; at the keyframe (T // 2) each
    rectangle covers its box exactly."""
    g = torch.Generator().manual_seed(seed)
    clip = torch.rand(3, T, H, W, generator=g) * 100 + 20
    colours = torch.tensor([[240.0, 220.0, 40.0], [40.0, 220.0, 240.0]])
    for t in range(T):
        for (x1, y1, x2, y2), colour in zip(boxes, colours):
            dx = 2 * (t - T // 2)
            clip[:, t, y1:y2, max(x1 + dx, 0) : min(x2 + dx, W)] = colour[:, None, None]
    return clip


def test_overfits_a_single_clip():
    gt_boxes = [[20, 12, 44, 56], [60, 20, 84, 60]]
    gt_actions = [[1, 0, 0, 1, 0, 0], [0, 1, 0, 0, 0, 1]]
    clip = moving_rectangles_clip(gt_boxes)
    batch = [{"clip": clip, "instances": gt_instances(gt_boxes, gt_actions, (H, W))}]
    model = build(tame=False).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    history = []
    for _ in range(50):
        total = sum(model(batch).values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
    assert history[-1] < 0.2 * history[0], history

    model.eval()
    with torch.no_grad():
        pred = model([{"clip": clip}])[0]["instances"]  # default threshold 0.7
    assert len(pred) >= 2
    pred = pred[pred.scores.argsort(descending=True)][:2]
    iou = pairwise_iou(pred.pred_boxes, Boxes(torch.tensor(gt_boxes, dtype=torch.float32)))
    # The two most confident persons are the two ground-truth boxes, one each.
    matched = iou.argmax(1)
    assert sorted(matched.tolist()) == [0, 1], iou
    assert (iou.max(1).values > 0.5).all(), iou
    for scores, j in zip(pred.pred_action_scores, matched.tolist()):
        truth = {c for c, v in enumerate(gt_actions[j]) if v}
        assert set(scores.topk(len(truth)).indices.tolist()) == truth, (scores, truth)


# ------------------------------------------------------------------------------------------ batches


def test_batch_with_different_person_counts_and_clip_sizes():
    model = build().train()
    batch = [
        training_input(64, 96, num_persons=2, seed=0),
        training_input(48, 80, num_persons=0, seed=1),  # padded to 64 x 96
        training_input(64, 64, num_persons=1, seed=2),
    ]
    losses = model(batch)
    assert set(losses) == expected_loss_names(2, 2, True, False)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_bbox"] > 0 and losses["loss_action"] > 0
    sum(losses.values()).backward()

    model.eval()
    model.score_thresh = 0.0
    with torch.no_grad():
        results = model([{"clip": x["clip"]} for x in batch] + [{"clip": random_clip(96, 64, seed=3)}])
    for r, (h, w) in zip(results, [(64, 96), (48, 80), (64, 64), (96, 64)]):
        inst = r["instances"]
        assert inst.image_size == (h, w) and len(inst) > 0
        b = inst.pred_boxes.tensor
        assert (b >= 0).all() and (b[:, [0, 2]] <= w).all() and (b[:, [1, 3]] <= h).all()


def test_results_do_not_depend_on_the_rest_of_the_batch():
    """A 48x80 clip is padded to 64x96 alone or next to a 64x96 clip: same predictions."""
    model = build().eval()
    model.score_thresh = 0.0
    small, large = random_clip(48, 80, seed=1), random_clip(64, 96, seed=2)
    with torch.no_grad():
        alone = model([{"clip": small}])[0]["instances"]
        batched = model([{"clip": large}, {"clip": small}])[1]["instances"]
    assert len(alone) == len(batched) > 0
    for field in ("scores", "pred_action_scores"):
        torch.testing.assert_close(batched.get(field), alone.get(field), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batched.pred_boxes.tensor, alone.pred_boxes.tensor, rtol=1e-4, atol=1e-3)


def _without(d, key):
    return {k: v for k, v in d.items() if k != key}


def _instances_without_actions():
    x = training_input()
    inst = Instances((H, W))
    inst.gt_boxes = x["instances"].gt_boxes
    return {"clip": x["clip"], "instances": inst}


def _wrong_number_of_classes():
    x = training_input()
    x["instances"].gt_actions = torch.zeros(1, NUM_CLASSES - 1)
    return x


@pytest.mark.parametrize(
    "training, make_input, error, match",
    [
        (False, lambda: {"height": H, "width": W}, KeyError, "'clip'"),
        (True, lambda: _without(training_input(), "clip"), KeyError, "'clip'"),
        (True, lambda: _without(training_input(), "instances"), KeyError, "instances"),
        (True, _instances_without_actions, KeyError, "gt_actions"),
        (True, _wrong_number_of_classes, ValueError, "NUM_ACTION_CLASSES"),
        (False, lambda: {"clip": torch.rand(3, H, W)}, ValueError, r"\(3, T, H, W\)"),
        (False, lambda: {"clip": torch.rand(1, 3, T, H, W)}, ValueError, r"\(3, T, H, W\)"),
        (False, lambda: {"clip": torch.rand(1, T, H, W)}, ValueError, r"\(3, T, H, W\)"),
        (False, lambda: {"clip": random_clip().numpy()}, ValueError, "tensor"),
        (False, lambda: {"clip": random_clip(t=7)}, ValueError, "multiple of 2"),
    ],
)
def test_bad_inputs_raise_clear_errors(training, make_input, error, match):
    model = build().train(training)
    with pytest.raises(error, match=match):
        model([make_input()])


def test_batch_errors():
    model = build().eval()
    with pytest.raises(ValueError, match="empty batch"):
        model([])
    with pytest.raises(ValueError, match="same T"):
        model([{"clip": random_clip()}, {"clip": random_clip(t=4)}])


# ------------------------------------------------------------------------------------------ keep rates


def surviving_tokens(model, inputs):
    with torch.no_grad(), Capture(model.backbone.net) as net:
        results = model(inputs)
    return net.calls[0]["tokens"].shape[1], results


def test_keep_rates_changed_at_inference():
    model = build().eval()
    model.score_thresh = 0.0
    inputs = [{"clip": random_clip(seed=8), "height": 2 * H, "width": 2 * W}]
    # 4 x 4 x 6 = 96 tokens, 24 on the keyframe; the tiny config keeps [1, .7, 1, .7]: 96 -> 68 -> 48.
    cases = [(None, 48), ([1.0, 0.5, 1.0, 0.5], 24), ([0.9, 1.0, 1.0, 1.0], 87), ([1.0] * 4, 96)]
    for rates, expected in cases:
        if rates is not None:
            model.set_keep_rates(rates)
        n, results = surviving_tokens(model, inputs)
        assert n == expected == model.backbone.net.token_counts((1, 3, T, H, W))[-1]
        inst = results[0]["instances"]
        assert len(inst) == NUM_PROPOSALS
        assert torch.isfinite(inst.pred_boxes.tensor).all() and (inst.pred_boxes.tensor <= 2 * W).all()
        assert ((inst.pred_action_scores >= 0) & (inst.pred_action_scores <= 1)).all()
    for bad in ([1.0] * 3, [1.0, 0.0, 1.0, 1.0], [1.0, 1.5, 1.0, 1.0]):
        with pytest.raises(ValueError, match="keep"):
            model.set_keep_rates(bad)


def test_keep_rate_one_equals_a_model_built_without_pruning():
    pruned = build().eval()
    unpruned = build("MODEL.EVAD.KEEP_RATES", [1.0] * 4, seed=1).eval()
    unpruned.load_state_dict(pruned.state_dict())
    for model in (pruned, unpruned):
        model.score_thresh = 0.0
    inputs = [{"clip": random_clip(seed=9)}, {"clip": random_clip(48, 80, seed=10)}]
    with torch.no_grad():
        pruned_default = pruned(inputs)
        reference = unpruned(inputs)
        for rates in ([1.0] * 4, None):
            pruned.set_keep_rates(rates)
            same = pruned(inputs)
            for a, b in zip(same, reference):
                a, b = a["instances"], b["instances"]
                assert len(a) == len(b) == NUM_PROPOSALS
                torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor, rtol=0, atol=1e-5)
                torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=1e-6)
                torch.testing.assert_close(a.pred_action_scores, b.pred_action_scores, rtol=0, atol=1e-6)
    # ...while the configured pruning does change the predictions.
    assert not torch.allclose(
        pruned_default[0]["instances"].pred_action_scores, reference[0]["instances"].pred_action_scores, atol=1e-4
    )


# ------------------------------------------------------------------------------------------ normalisation


def backbone_input(model, clips):
    with torch.no_grad(), Capture(model.backbone.net, pre=True) as net:
        model([{"clip": c} for c in clips])
    return net.calls[0][0]


def test_pixel_normalisation_and_padding():
    mean, std = [10.0, 20.0, 30.0], [2.0, 4.0, 5.0]
    model = build("MODEL.PIXEL_MEAN", mean, "MODEL.PIXEL_STD", std).eval()
    mean_t = torch.tensor(mean).view(3, 1, 1, 1)
    std_t = torch.tensor(std).view(3, 1, 1, 1)

    # A clip of the mean colour is the zero input, like the padding next to a smaller clip.
    x = backbone_input(model, [mean_t.expand(3, T, H, W).clone(), mean_t.expand(3, T, 48, 80).clone()])
    assert x.shape == (2, 3, T, 64, 96)
    assert torch.equal(x, torch.zeros_like(x))

    clip = random_clip(seed=11)
    x = backbone_input(model, [clip, torch.zeros(3, T, 48, 80, dtype=torch.uint8)])
    torch.testing.assert_close(x[0], (clip - mean_t) / std_t)
    # Zeros normalise to -mean/std per channel; the padding stays 0.
    torch.testing.assert_close(x[1, :, :, :48, :80], (-mean_t / std_t).expand(3, T, 48, 80))
    assert (x[1, :, :, 48:] == 0).all() and (x[1, :, :, :, 80:] == 0).all()

    with pytest.raises(ValueError, match="PIXEL_MEAN"):
        build("MODEL.PIXEL_MEAN", [1.0, 2.0], "MODEL.PIXEL_STD", std)


def test_device_is_the_buffers_device():
    model = build()
    assert model.device == model.pixel_mean.device == torch.device("cpu")
    model.to("meta")
    assert model.device.type == "meta" and model.pixel_std.device.type == "meta"


def test_clip_padding_equals_detectron2_image_list():
    from evad_d2.modeling.meta_arch.evad import _pad_clips

    g = torch.Generator().manual_seed(0)
    clips = [torch.randn(3, 4, h, w, generator=g) for h, w in ((30, 50), (45, 20), (32, 48))]
    for d in (0, 1, 16):
        ours, ref = _pad_clips(clips, d), ImageList.from_tensors(clips, d)
        assert ours.tensor.shape == ref.tensor.shape == (3, 3, 4, 48 if d == 16 else 45, 64 if d == 16 else 50)
        assert torch.equal(ours.tensor, ref.tensor)
        assert [tuple(s) for s in ours.image_sizes] == [tuple(int(v) for v in s) for s in ref.image_sizes]


# ------------------------------------------------------------------------------------------ registries


@contextlib.contextmanager
def registered(registry, cls):
    """``cls`` in ``registry`` for the duration of the block only."""
    registry.register(cls)
    try:
        yield cls
    finally:
        registry._obj_map.pop(cls.__name__)


class MeanTokenActionHead(nn.Module):
    """A user's stand-in action head: one linear layer on the mean token, the same logits for
    every box."""

    @configurable
    def __init__(self, *, in_dim: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, num_classes)

    @classmethod
    def from_config(cls, cfg):
        return {"in_dim": cfg.MODEL.EVAD.EMBED_DIM, "num_classes": cfg.MODEL.EVAD.NUM_ACTION_CLASSES}

    def forward(self, tokens, token_index, grid, boxes, image_sizes):
        logits = self.linear(tokens.mean(dim=1))  # (B, C)
        return [logits[:, None].expand(-1, boxes.shape[1], -1)]


class WholeClipLocalizationHead(nn.Module):
    """A user's stand-in localization head: n proposals, each the whole clip, learnable logits."""

    @configurable
    def __init__(self, *, num_proposals: int):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([[2.0, -2.0]]).repeat(num_proposals, 1))

    @classmethod
    def from_config(cls, cfg, input_shape):
        assert "p2" in input_shape  # the backbone's output_shape()
        return {"num_proposals": cfg.MODEL.EVAD.LOC.NUM_PROPOSALS}

    def forward(self, features, image_sizes):
        batch, n = image_sizes.shape[0], self.logits.shape[0]
        boxes = torch.cat([torch.zeros_like(image_sizes), image_sizes.flip(-1)], dim=-1)  # (B, 4)
        outputs = [{"pred_logits": self.logits[None].expand(batch, -1, -1), "pred_boxes": boxes[:, None].expand(-1, n, -1)}]
        return outputs, self.logits.new_zeros(batch, n, 1)


def test_user_registered_action_head_is_built_from_the_config_and_used():
    name = "MeanTokenActionHead"
    with registered(ACTION_HEAD_REGISTRY, MeanTokenActionHead):
        get_evad_cfg(TINY_CONFIG, ["MODEL.EVAD.ACTION_HEAD", name])  # the config check accepts it
        model = build("MODEL.EVAD.ACTION_HEAD", name)
        assert type(model.action_head) is MeanTokenActionHead
        assert model.action_head.linear.out_features == NUM_CLASSES

        model.eval()
        with torch.no_grad(), Capture(model.action_head) as logits:
            (out,) = model([{"clip": random_clip()}])
        inst = out["instances"]
        assert len(inst) > 0 and inst.pred_action_scores.shape == (len(inst), NUM_CLASSES)
        expected = logits.calls[0][-1][0, 0].sigmoid()  # every box of the clip has the same logits
        torch.testing.assert_close(inst.pred_action_scores, expected.expand(len(inst), -1))

        model.train()
        losses = model([training_input(num_persons=2)])
        assert "loss_action" in losses and all(torch.isfinite(v) for v in losses.values())
        sum(losses.values()).backward()
        assert model.action_head.linear.weight.grad.abs().sum() > 0
    assert name not in ACTION_HEAD_REGISTRY
    with pytest.raises(ConfigValueError, match=rf"MODEL.EVAD.ACTION_HEAD = '{name}' is not allowed"):
        get_evad_cfg(TINY_CONFIG, ["MODEL.EVAD.ACTION_HEAD", name])


def test_user_registered_localization_head_is_built_from_the_config_and_used():
    name = "WholeClipLocalizationHead"
    with registered(LOCALIZATION_HEAD_REGISTRY, WholeClipLocalizationHead):
        get_evad_cfg(TINY_CONFIG, ["MODEL.EVAD.LOC.NAME", name])
        model = build("MODEL.EVAD.LOC.NAME", name, tame=False).eval()
        assert type(model.localization_head) is WholeClipLocalizationHead
        with torch.no_grad():
            (out,) = model([{"clip": random_clip(), "height": 2 * H, "width": 2 * W}])
        inst = out["instances"]
        assert len(inst) == NUM_PROPOSALS  # all pass the threshold: softmax(2, -2)[0] = 0.98
        assert torch.equal(inst.pred_boxes.tensor, torch.tensor([[0.0, 0.0, 2 * W, 2 * H]]).expand(NUM_PROPOSALS, -1))
    assert name not in LOCALIZATION_HEAD_REGISTRY


@pytest.mark.parametrize(
    "key, registry",
    [("MODEL.EVAD.ACTION_HEAD", "ACTION_HEAD_REGISTRY"), ("MODEL.EVAD.LOC.NAME", "LOCALIZATION_HEAD_REGISTRY")],
)
def test_unknown_head_name_names_the_key_and_the_registered_names(key, registry):
    # A hand-built config that skipped check_evad_cfg fails when the model is built.
    with pytest.raises(ValueError) as err:
        build(key, "NoSuchHead")
    message = str(err.value)
    assert message.startswith(f"{key} = 'NoSuchHead'") and registry in message
    names = ["ContextRefinementHead", "LinearActionHead"] if key.endswith("ACTION_HEAD") else ["LocalizationHead"]
    assert str(names) in message
    with pytest.raises(ConfigValueError, match=rf"{key} = 'NoSuchHead' is not allowed: .*{registry} \[") as err:
        get_evad_cfg(TINY_CONFIG, [key, "NoSuchHead"])
    assert str(names) in str(err.value)
