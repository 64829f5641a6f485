"""The per-part time pass (evad_d2.benchmark.breakdown) on a toy model: which parts are timed, the
rest computed as total minus the top-level parts, a part called twice per forward refused."""
import pytest
import torch
from torch import nn

from evad_d2.benchmark.breakdown import part_fields, part_names, part_times


class _Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(4, 4)
        self.neck = nn.Linear(4, 4)

    def forward(self, x):
        return self.neck(self.net(x))


class _Toy(nn.Module):
    def __init__(self, action_calls=1):
        super().__init__()
        self.backbone = _Backbone()
        self.localization_head = nn.Linear(4, 4)
        self.action_head = nn.Linear(4, 4)
        self.action_calls = action_calls

    def forward(self, x):
        x = self.localization_head(self.backbone(x * 2))
        for _ in range(self.action_calls):
            x = self.action_head(x)
        return x


def test_each_present_part_is_timed_and_other_is_total_minus_top_level_parts():
    model, x = _Toy(), torch.randn(3, 4)
    ms = part_times(model, lambda: model(x), repeats=3, device=torch.device("cpu"))
    assert set(ms) == {"backbone.net", "backbone", "localization_head", "action_head", "total", "other"}
    assert all(v >= 0 for k, v in ms.items() if k != "other")
    assert ms["backbone.net"] <= ms["backbone"] <= ms["total"]
    assert ms["other"] >= 0  # per call, total minus the parts: never negative
    # With one call the medians are the values themselves, so they add up.
    one = part_times(model, lambda: model(x), repeats=1, device=torch.device("cpu"))
    assert one["other"] == pytest.approx(one["total"] - one["backbone"] - one["localization_head"] - one["action_head"])
    # The hooks are gone afterwards.
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_a_backbone_without_net_is_timed_whole():
    model, x = _Toy(), torch.randn(3, 4)
    model.backbone = nn.Linear(4, 4)
    assert "backbone.net" not in part_times(model, lambda: model(x), repeats=1, device=torch.device("cpu"))


def test_a_part_called_twice_per_forward_is_refused():
    model, x = _Toy(action_calls=2), torch.randn(3, 4)
    with pytest.raises(RuntimeError, match="each part should run once per call"):
        part_times(model, lambda: model(x), repeats=2, device=torch.device("cpu"))


def test_flat_field_names_in_parts_order():
    rows = [part_fields({"total": 3.0, "other": 0.5, "action_head": 1.0, "backbone.net": 1.5})]
    assert rows[0] == {"model_part_total_ms": 3.0, "model_part_other_ms": 0.5, "model_part_action_head_ms": 1.0,
                       "model_part_backbone_net_ms": 1.5}
    assert part_names(rows) == ["model_part_backbone_net_ms", "model_part_action_head_ms", "model_part_other_ms",
                                "model_part_total_ms"]
    assert part_names([]) == []
