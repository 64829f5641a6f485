"""Heads registered by a user are built from the config and used; unknown head names name the key
and the registered names."""
import contextlib

import pytest
import torch
from detectron2.config import configurable
from torch import nn

from evad_d2.config import ConfigValueError, get_evad_cfg
from evad_d2.modeling.heads import ACTION_HEAD_REGISTRY, LOCALIZATION_HEAD_REGISTRY
from evad_d2.testing import TINY_CLIP, TINY_CONFIG, build_tiny_model, Capture, random_clip, training_input
from evad_d2.testing import TINY_NUM_CLASSES as NUM_CLASSES, TINY_NUM_PROPOSALS as NUM_PROPOSALS

T, H, W = TINY_CLIP


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
        model = build_tiny_model("MODEL.EVAD.ACTION_HEAD", name)
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
        model = build_tiny_model("MODEL.EVAD.LOC.NAME", name, tame=False).eval()
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
        build_tiny_model(key, "NoSuchHead")
    message = str(err.value)
    assert message.startswith(f"{key} = 'NoSuchHead'") and registry in message
    names = ["ContextRefinementHead", "LinearActionHead"] if key.endswith("ACTION_HEAD") else ["LocalizationHead"]
    assert str(names) in message
    with pytest.raises(ConfigValueError, match=rf"{key} = 'NoSuchHead' is not allowed: .*{registry} \[") as err:
        get_evad_cfg(TINY_CONFIG, [key, "NoSuchHead"])
    assert str(names) in str(err.value)
