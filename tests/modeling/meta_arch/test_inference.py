"""EVAD inference on the tiny CPU config: outputs rescaled and consistent with the heads, score
thresholds, keep-all-if-none, and the official-checkpoint mode's box clipping and person threshold."""
import pytest
import torch

from evad_d2.modeling import EVAD
from evad_d2.testing import TINY_CLIP, build_tiny_model, Capture, random_clip
from evad_d2.testing import TINY_NUM_CLASSES as NUM_CLASSES, TINY_NUM_PROPOSALS as NUM_PROPOSALS

T, H, W = TINY_CLIP


def run_inference(model, inputs):
    """(results, last-stage person probabilities (B, n), last-layer action logits (B, n, C))."""
    with torch.no_grad(), Capture(model.localization_head) as loc, Capture(model.action_head) as act:
        results = model(inputs)
    person = loc.calls[0][0][-1]["pred_logits"].softmax(-1)[..., 0]
    return results, person, act.calls[0][-1]


def test_inference_outputs_are_rescaled_and_consistent_with_the_heads():
    model = build_tiny_model().eval()
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
    model = build_tiny_model().eval()
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
    model = build_tiny_model().eval()
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
    model = build_tiny_model("MODEL.EVAD.LOC.SCORE_THRESH_TEST", 0.4, "MODEL.EVAD.LOC.KEEP_ALL_IF_NONE", True)
    assert isinstance(model, EVAD) and model.score_thresh == 0.4 and model.keep_all_if_none
    with pytest.raises(ValueError, match="SCORE_THRESH_TEST"):
        build_tiny_model("MODEL.EVAD.LOC.SCORE_THRESH_TEST", 1.0)


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
    model = build_tiny_model("MODEL.EVAD.OFFICIAL_MODE", official).eval()
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
    model = build_tiny_model("MODEL.EVAD.OFFICIAL_MODE", official).eval()
    assert model.score_thresh == 0.7
    # float32(0.7) is what a probability of 0.7 is; the official code keeps it (>=), ours does not (>).
    person = torch.tensor([0.6999999, 0.7, 0.7000001], dtype=torch.float32)
    assert person[0] < person[1] < person[2]
    assert model.keep_mask(person).tolist() == kept


def test_official_mode_keeps_all_proposals_when_none_passes():
    model = build_tiny_model("MODEL.EVAD.OFFICIAL_MODE", True).eval()
    loc, logits = _outputs(CLIP_BOXES, [0.1, 0.2, 0.3])
    (inst,) = model.inference(loc, logits, [(H, W)])
    assert len(inst) == 3
    torch.testing.assert_close(inst.scores, torch.tensor([0.1, 0.2, 0.3]))
