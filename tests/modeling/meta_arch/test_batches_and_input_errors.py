"""EVAD on batches of mixed clip sizes and person counts (results independent of the batch), and
the clear errors bad inputs raise."""
import pytest
import torch
from detectron2.structures import Instances

from evad_d2.testing import TINY_CLIP, build_tiny_model, evad_loss_names, random_clip, training_input
from evad_d2.testing import TINY_NUM_CLASSES as NUM_CLASSES

T, H, W = TINY_CLIP


def test_batch_with_different_person_counts_and_clip_sizes():
    model = build_tiny_model().train()
    batch = [
        training_input(64, 96, num_persons=2, seed=0),
        training_input(48, 80, num_persons=0, seed=1),  # padded to 64 x 96
        training_input(64, 64, num_persons=1, seed=2),
    ]
    losses = model(batch)
    assert set(losses) == evad_loss_names(2, 2, True, False)
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
    model = build_tiny_model().eval()
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
    model = build_tiny_model().train(training)
    with pytest.raises(error, match=match):
        model([make_input()])


def test_batch_errors():
    model = build_tiny_model().eval()
    with pytest.raises(ValueError, match="empty batch"):
        model([])
    with pytest.raises(ValueError, match="same T"):
        model([{"clip": random_clip()}, {"clip": random_clip(t=4)}])
