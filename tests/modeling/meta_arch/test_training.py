"""EVAD training on the tiny CPU config: losses and gradients per configuration (deep supervision,
both action heads), clips without persons, and overfitting one clip."""
import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling.poolers import assign_boxes_to_levels
from detectron2.structures import Boxes, pairwise_iou

from evad_d2.testing import TINY_CLIP, build_tiny_model, Capture, evad_loss_names, gt_instances, random_clip, training_input

T, H, W = TINY_CLIP


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


@pytest.mark.parametrize(
    "head, num_stages, depth, deep",
    [("decoder", 2, 2, True), ("decoder", 3, 3, False), ("decoder", 3, 1, True), ("linear", 2, 2, True)],
)
def test_training_losses_and_gradients(head, num_stages, depth, deep):
    model = build_tiny_model(
        "MODEL.EVAD.ACTION_HEAD", head, "MODEL.EVAD.LOC.NUM_STAGES", num_stages,
        "MODEL.EVAD.DECODER.DEPTH", depth, "MODEL.EVAD.LOSS.DEEP_SUPERVISION", deep,
    ).train()
    batch = [training_input(num_persons=2, seed=0), training_input(num_persons=1, seed=1)]
    with Capture(model.localization_head.pooler, pre=True) as pooled:
        losses = model(batch)

    assert set(losses) == evad_loss_names(num_stages, depth, deep, head == "linear")
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
    on = build_tiny_model().train()
    off = build_tiny_model("MODEL.EVAD.LOSS.DEEP_SUPERVISION", False).train()
    off.load_state_dict(on.state_dict())
    batch = [training_input(num_persons=2, seed=3)]
    losses_on, losses_off = on(batch), off(batch)
    assert set(losses_off) == {"loss_ce", "loss_bbox", "loss_giou", "loss_action"}
    for name, value in losses_off.items():
        torch.testing.assert_close(value, losses_on[name], rtol=1e-5, atol=1e-6)


def test_clip_without_persons_has_only_background_loss():
    """Hand-computed: all proposals are no-object, so CE = 2 * mean(-log p_no-object), the rest 0."""
    model = build_tiny_model().train()
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
    model = build_tiny_model(tame=False).train()
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
