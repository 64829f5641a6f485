"""Hungarian matcher and set-prediction/action losses on hand-computable cases."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg

from evad_d2.config import add_evad_config
from evad_d2.modeling.losses import SetCriterion
from evad_d2.modeling.matcher import HungarianMatcher


def target(boxes, size=(20, 10), actions=None, num_classes=3):
    boxes = torch.as_tensor(boxes, dtype=torch.float32).view(-1, 4)
    if actions is None:
        actions = torch.zeros(len(boxes), num_classes)
    return {"boxes": boxes, "image_size": size, "actions": torch.as_tensor(actions, dtype=torch.float32)}


def random_boxes(n, g, size=100.0):
    xy = torch.rand(n, 2, generator=g) * size * 0.6
    wh = torch.rand(n, 2, generator=g) * size * 0.4 + 1.0
    return torch.cat([xy, xy + wh], dim=1)


# ---------------------------------------------------------------------------------------- matcher
def test_cost_matrix_by_hand():
    matcher = HungarianMatcher(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0)
    cost = matcher.cost_matrix(
        torch.tensor([[0.0, 0.0]]),  # p(person) = 0.5
        torch.tensor([[0.0, 0.0, 10.0, 10.0]]),
        torch.tensor([[0.0, 0.0, 10.0, 20.0]]),
        (20, 10),  # (h, w)
    )
    # class: 2 * -0.5; L1 on (x/10, y/20): |0.5 - 1| = 0.5 -> 5 * 0.5; GIoU: IoU 0.5, hull = union -> 2 * -0.5.
    torch.testing.assert_close(cost, torch.tensor([[-1.0 + 2.5 - 1.0]]))


@pytest.mark.parametrize("seed", range(6))
def test_matcher_equals_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    n, batch = 5, 3
    outputs = {"pred_logits": torch.randn(batch, n, 2, generator=g), "pred_boxes": random_boxes(batch * n, g).view(batch, n, 4)}
    targets = [
        {"boxes": random_boxes(m, g), "image_size": (100, 120)} for m in (seed % 4 + 1, 0, min(n, seed + 2))
    ]
    matcher = HungarianMatcher()
    indices = matcher(outputs, targets)
    for b, ((rows, cols), t) in enumerate(zip(indices, targets)):
        m = len(t["boxes"])
        assert len(rows) == len(cols) == m
        if m == 0:
            assert rows.dtype == torch.int64
            continue
        cost = matcher.cost_matrix(outputs["pred_logits"][b], outputs["pred_boxes"][b], t["boxes"], t["image_size"])
        best = min(sum(cost[p, j].item() for j, p in enumerate(perm)) for perm in itertools.permutations(range(n), m))
        assert sum(cost[r, c].item() for r, c in zip(rows, cols)) == pytest.approx(best, abs=1e-5)
        assert len(set(rows.tolist())) == m and sorted(cols.tolist()) == list(range(m))


def test_matcher_picks_the_obvious_pairs():
    outputs = {
        "pred_logits": torch.tensor([[[5.0, -5.0], [5.0, -5.0], [-5.0, 5.0]]]),
        "pred_boxes": torch.tensor([[[50.0, 50.0, 90.0, 90.0], [0.0, 0.0, 20.0, 20.0], [0.0, 0.0, 20.0, 20.0]]]),
    }
    rows, cols = HungarianMatcher()(outputs, [target([[1.0, 1.0, 21.0, 19.0], [52.0, 48.0, 88.0, 91.0]], size=(100, 100))])[0]
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 1, 1: 0}


# ----------------------------------------------------------------------------------------- losses
def one_stage(logits, boxes):
    return {"pred_logits": torch.tensor(logits).view(1, -1, 2), "pred_boxes": torch.tensor(boxes).view(1, -1, 4)}


def test_losses_by_hand():
    # Prediction 0 sits on the GT box region used below; prediction 1 is far away -> 0 is matched.
    logits = [[1.0, 0.0], [0.0, 2.0]]
    boxes = [[0.0, 0.0, 2.0, 2.0], [8.0, 8.0, 9.0, 9.0]]
    gt = [[1.0, 1.0, 3.0, 3.0]]
    crit = SetCriterion()
    losses = crit([one_stage(logits, boxes)], None, [target(gt, size=(10, 20))])
    assert set(losses) == {"loss_ce", "loss_bbox", "loss_giou"}

    # CE, weighted mean: pred 0 -> person (weight 1), pred 1 -> no-object (weight 0.1).
    ce0 = -math.log(math.exp(1) / (math.exp(1) + 1))
    ce1 = -math.log(math.exp(2) / (1 + math.exp(2)))
    assert losses["loss_ce"].item() == pytest.approx(2.0 * (ce0 + 0.1 * ce1) / 1.1, rel=1e-5)
    # L1 in units of (w, h) = (20, 10): |1|/20 + |1|/10 + |1|/20 + |1|/10 = 0.3; one GT box.
    assert losses["loss_bbox"].item() == pytest.approx(5.0 * 0.3, rel=1e-5)
    # GIoU: inter 1, union 7, hull 9 -> 1/7 - 2/9.
    assert losses["loss_giou"].item() == pytest.approx(2.0 * (1 - (1 / 7 - 2 / 9)), rel=1e-5)


def test_box_losses_are_normalised_by_total_gt_boxes():
    stage = {
        "pred_logits": torch.zeros(2, 2, 2),
        "pred_boxes": torch.tensor([[[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]]] * 2),
    }
    # Clip 0: one GT shifted by 2 px in x; clip 1: two exact GTs. L1 sum = 2*2/100 = 0.04, 3 boxes.
    targets = [
        target([[2.0, 0.0, 12.0, 10.0]], size=(100, 100)),
        target([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]], size=(100, 100)),
    ]
    losses = SetCriterion()([stage], None, targets)
    assert losses["loss_bbox"].item() == pytest.approx(5.0 * 0.04 / 3, rel=1e-5)


def test_action_bce_by_hand_uses_last_stage_assignment():
    gt = [[0.0, 0.0, 10.0, 10.0]]
    # Stage 0 has prediction 0 on the GT, the last stage prediction 1.
    first = one_stage([[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0, 10.0, 10.0], [60.0, 60.0, 90.0, 90.0]])
    last = one_stage([[0.0, 0.0], [0.0, 0.0]], [[60.0, 60.0, 90.0, 90.0], [0.0, 0.0, 10.0, 10.0]])
    actions = torch.tensor([[[0.0, 0.0, 0.0], [2.0, -1.0, 0.0]]])  # prediction 1 has logits (2, -1, 0)
    crit = SetCriterion()
    losses = crit([first, last], [actions, actions], [target(gt, size=(100, 100), actions=[[1.0, 0.0, 1.0]])])
    bce = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0)) + math.log(2.0)) / 3
    assert losses["loss_action"].item() == pytest.approx(12.0 * bce, rel=1e-5)
    assert losses["loss_action_layer0"].item() == pytest.approx(12.0 * bce, rel=1e-5)
    # Stage 0 is matched on its own: its prediction 0 is exact, so its box losses vanish.
    assert losses["loss_bbox_stage0"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["loss_bbox"].item() == pytest.approx(0.0, abs=1e-6)


def test_loss_names_with_and_without_deep_supervision():
    g = torch.Generator().manual_seed(0)
    stages = [{"pred_logits": torch.randn(2, 4, 2, generator=g), "pred_boxes": random_boxes(8, g).view(2, 4, 4)} for _ in range(3)]
    actions = [torch.randn(2, 4, 3, generator=g) for _ in range(2)]
    targets = [target(random_boxes(2, g), size=(100, 100)), target(random_boxes(1, g), size=(100, 100))]
    losses = SetCriterion()(stages, actions, targets)
    expected = {"loss_ce", "loss_bbox", "loss_giou", "loss_action", "loss_action_layer0"}
    expected |= {f"loss_{k}_stage{i}" for k in ("ce", "bbox", "giou") for i in (0, 1)}
    assert set(losses) == expected
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    shallow = SetCriterion(deep_supervision=False)(stages, actions, targets)
    assert set(shallow) == {"loss_ce", "loss_bbox", "loss_giou", "loss_action"}
    for k, v in shallow.items():
        torch.testing.assert_close(v, losses[k])


def test_zero_gt_clips():
    logits = torch.randn(2, 3, 2, requires_grad=True)
    boxes = (random_boxes(6, torch.Generator().manual_seed(0)).view(2, 3, 4)).requires_grad_(True)
    actions = torch.randn(2, 3, 4, requires_grad=True)
    targets = [target(torch.zeros(0, 4), num_classes=4), target(torch.zeros(0, 4), num_classes=4)]
    losses = SetCriterion()([{"pred_logits": logits, "pred_boxes": boxes}], [actions], targets)
    for k in ("loss_bbox", "loss_giou", "loss_action"):
        assert losses[k].item() == 0.0 and losses[k].requires_grad
    # Every proposal is no-object, all with the same weight: a plain mean.
    expected = F.cross_entropy(logits.reshape(-1, 2), torch.ones(6, dtype=torch.long))
    torch.testing.assert_close(losses["loss_ce"], 2.0 * expected)
    sum(losses.values()).backward()
    assert logits.grad.abs().sum() > 0 and boxes.grad is not None

    # A batch mixing a zero-GT clip with a one-GT clip.
    mixed = [targets[0], target([[0.0, 0.0, 10.0, 10.0]], size=(100, 100), num_classes=4)]
    losses = SetCriterion()([{"pred_logits": logits, "pred_boxes": boxes}], [actions], mixed)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_action"] > 0


def test_from_config():
    cfg = get_cfg()
    add_evad_config(cfg)
    cfg.MODEL.EVAD.LOSS.NO_OBJECT_WEIGHT = 0.25
    cfg.MODEL.EVAD.LOSS.ACTION_WEIGHT = 3.0
    crit = SetCriterion(cfg)
    assert crit.class_loss_weight.tolist() == [1.0, 0.25] and crit.action_weight == 3.0
    assert (crit.matcher.cost_class, crit.matcher.cost_bbox, crit.matcher.cost_giou) == (2.0, 5.0, 2.0)
