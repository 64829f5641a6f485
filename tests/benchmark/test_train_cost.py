"""Training cost by keep rate: the exact saved-for-backward counter against hand-computed cases,
and the training benchmark's activation-memory fields at a tiny size."""
import json

import pytest
import torch
from torch import nn

from evad_d2.benchmark.activations import SavedTensorCounter, activation_memory
from evad_d2.testing import TINY_CONFIG as TINY

F32 = 4  # bytes per float32


def linear():
    torch.manual_seed(0)
    return nn.Linear(4, 3)


def test_linear_relu_saves_the_input_and_the_relu_output():
    """y = relu(x W^T + b), x (5, 4) without grad: addmm saves x for dL/dW (W^T is not needed, x
    needs no gradient), relu saves its output (5, 3): 80 + 60 bytes, nothing of the parameters."""
    lin = linear()
    with SavedTensorCounter(lin) as counted:
        y = torch.relu(lin(torch.randn(5, 4)))
    assert (counted.activation_bytes, counted.parameter_bytes) == (5 * 4 * F32 + 5 * 3 * F32, 0)
    assert (counted.num_storages, counted.num_saved) == (2, 2)
    del y


def test_an_input_that_needs_grad_also_saves_the_weight_counted_as_a_parameter():
    """With x requiring grad, addmm also saves W^T (a view of the (3, 4) weight: 48 bytes)."""
    lin = linear()
    x = torch.randn(5, 4, requires_grad=True)
    with SavedTensorCounter(lin) as counted:
        y = torch.relu(lin(x))
    assert (counted.activation_bytes, counted.parameter_bytes) == (80 + 60, 3 * 4 * F32)
    assert counted.saved_bytes == 188
    with SavedTensorCounter() as unexcluded:  # no module: the weight is an activation too
        y = torch.relu(lin(x))
    assert (unexcluded.activation_bytes, unexcluded.parameter_bytes) == (188, 0)
    del y


def test_views_of_one_storage_count_once_and_dead_branches_not_at_all():
    """h = lin(x) (10, 6): 240 bytes; p * q of its two halves saves both views: one storage. The
    addmm saves x (10, 4): 160 bytes. A branch dropped inside the context (z) counts nothing."""
    lin = nn.Linear(4, 6)
    x = torch.randn(10, 4)
    with SavedTensorCounter(lin) as counted:
        h = lin(x)
        r = h[:, :3] * h[:, 3:]
        z = torch.relu(lin(torch.randn(7, 4)))  # saves 112 + 168 bytes, then dies
        del z
    assert counted.activation_bytes == 10 * 6 * F32 + 10 * 4 * F32
    assert counted.num_storages == 2 and counted.num_saved == 5  # addmm x, mul p and q; the dead addmm, relu
    del r


def test_counting_changes_nothing_in_the_gradients():
    lin = linear()
    x = torch.randn(5, 4, requires_grad=True)
    torch.relu(lin(x)).sum().backward()
    expected = (x.grad.clone(), lin.weight.grad.clone())
    x.grad = None
    lin.weight.grad = None
    with SavedTensorCounter(lin):
        y = torch.relu(lin(x)).sum()
    y.backward()
    assert torch.equal(x.grad, expected[0]) and torch.equal(lin.weight.grad, expected[1])


def tiny_training(keep_rates=(1.0, 0.5)):
    from evad_d2 import get_evad_cfg
    from evad_d2.benchmark.step import build_training
    from evad_d2.benchmark.timing import BenchmarkSettings

    settings = BenchmarkSettings(keep_rates=list(keep_rates), input_size=(8, 64, 64), batch_size=2, repeats=1, warmup=0,
                                 device="cpu", dtype="fp32", flops=False)
    cfg = get_evad_cfg(TINY)
    model, batch, _ = build_training(cfg, settings)
    return model, batch, list(cfg.MODEL.EVAD.KEEP_RATES)


def test_tiny_evad_activation_memory_falls_with_the_keep_rate_and_repeats_exactly():
    model, batch, base = tiny_training()
    found = activation_memory(model, batch, base, [1.0, 0.5, 1.0], "cpu")
    full, half = found[1.0], found[0.5]
    # The patch embedding saves the two (3, 8, 64, 64) float32 clips: a lower bound of every count.
    clips_mb = 2 * 3 * 8 * 64 * 64 * F32 / 2**20
    assert clips_mb < half["activation_mb"] < full["activation_mb"]
    # Exact and repeatable (no allocator in it): the third call, at 1.0 again, counts the same.
    again = activation_memory(model, batch, base, [1.0], "cpu")[1.0]
    assert again == full
    assert full["saved_parameter_mb"] > 0  # weights saved for the input gradients, counted apart


def test_training_cost_plot_labels_each_point_with_its_ratio_to_the_reference(tmp_path):
    from evad_d2.benchmark.training_plot import plot_training_cost, ratio_labels

    assert ratio_labels([200.0, 124.0, 50.0]) == ["1.00x", "0.62x", "0.25x"]
    rows = [{"keep_rate": 1.0, "step_ms": 200.0, "activation_mb": 100.0, "peak_memory_mb": 300.0},
            {"keep_rate": 0.7, "step_ms": 130.0, "activation_mb": 55.0, "peak_memory_mb": 240.0}]
    path = plot_training_cost(rows, str(tmp_path / "cost.png"), title="tiny")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="keep_rate, step_ms"):
        plot_training_cost([{"keep_rate": 1.0}], str(tmp_path / "bad.png"))


def test_training_benchmark_rows_carry_the_activation_memory_by_keep_rate():
    """The JSON schema of ``tools/benchmark.py --part model --mode train`` at a tiny size (no memory probe)."""
    from evad_d2 import get_evad_cfg
    from evad_d2.benchmark.timing import BenchmarkSettings
    from evad_d2.benchmark.training import ACTIVATION_METHOD, benchmark_training

    settings = BenchmarkSettings(keep_rates=[1.0, 0.5], input_size=(8, 64, 64), batch_size=2, repeats=1, warmup=0,
                                 device="cpu", dtype="fp32", flops=False)
    rows = benchmark_training(get_evad_cfg(TINY), settings, measure_memory=False)
    model, batch, base = tiny_training()
    exact = activation_memory(model, batch, base, [1.0, 0.5], "cpu")
    assert [r["keep_rate"] for r in rows] == [1.0, 0.5] and [r["tokens"] for r in rows] == [64, 16]
    for r in rows:
        assert {k: r[k] for k in exact[r["keep_rate"]]} == exact[r["keep_rate"]]  # the same model, batch and count
        assert r["activation_method"] == ACTIVATION_METHOD and len(r["step_all_ms"]) == 1 and r["step_ms"] > 0
        assert "peak_memory_mb" not in r  # not measured
    assert rows[0]["activation_ratio_vs_ref"] == 1.0
    assert rows[1]["activation_ratio_vs_ref"] == pytest.approx(rows[1]["activation_mb"] / rows[0]["activation_mb"])
    assert rows[1]["activation_ratio_vs_ref"] < 1.0
    assert json.loads(json.dumps(rows)) == rows
