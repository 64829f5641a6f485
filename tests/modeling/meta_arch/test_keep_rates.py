"""Keep rates changed at inference time, and keep rate 1 equal to a model built without pruning."""
import pytest
import torch

from evad_d2.testing import TINY_CLIP, build_tiny_model, Capture, random_clip
from evad_d2.testing import TINY_NUM_PROPOSALS as NUM_PROPOSALS

T, H, W = TINY_CLIP


def surviving_tokens(model, inputs):
    with torch.no_grad(), Capture(model.backbone.net) as net:
        results = model(inputs)
    return net.calls[0]["tokens"].shape[1], results


def test_keep_rates_changed_at_inference():
    model = build_tiny_model().eval()
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
    pruned = build_tiny_model().eval()
    unpruned = build_tiny_model("MODEL.EVAD.KEEP_RATES", [1.0] * 4, seed=1).eval()
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
