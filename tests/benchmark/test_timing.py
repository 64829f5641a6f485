"""The benchmarks' timing framework (evad_d2.benchmark.timing) on plain Python calls."""
import pytest
import torch

from evad_d2.benchmark.timing import BenchmarkSettings, add_ratios, speed_fields, time_interleaved


def test_time_interleaved_runs_every_call_once_per_repetition_after_warmup():
    order = []
    calls = {k: (lambda k=k: order.append(k)) for k in ("a", "b")}
    times = time_interleaved(calls, repeats=3, warmup=1, device=torch.device("cpu"))
    assert order == ["a", "b"] + ["a", "b"] * 3
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    assert all(t >= 0 for v in times.values() for t in v)


def test_speed_fields_are_the_median_and_its_throughput():
    fields = speed_fields([0.3, 0.1, 0.2], batch_size=2, num_frames=8, prefix="model_", unit="step")
    assert fields["model_step_ms"] == pytest.approx(200.0)
    assert fields["model_step_all_ms"] == pytest.approx([300.0, 100.0, 200.0])
    assert fields["model_clips_per_s"] == pytest.approx(10.0)
    assert fields["model_frames_per_s"] == pytest.approx(80.0)


def test_ratios_are_to_keep_rate_one_else_the_first_row():
    rows = [{"keep_rate": 0.5, "x": 1.0}, {"keep_rate": 1.0, "x": 4.0}]
    add_ratios(rows, [("x", "x_vs_ref"), ("missing", "y")])
    assert [r["x_vs_ref"] for r in rows] == [0.25, 1.0] and "y" not in rows[0]
    rows = [{"keep_rate": 0.7, "x": 2.0}, {"keep_rate": 0.5, "x": 1.0}]
    add_ratios(rows, [("x", "x_vs_ref")])
    assert [r["x_vs_ref"] for r in rows] == [1.0, 0.5]


def test_settings_clip_size_defaults_to_the_config_test_size():
    class Input:
        NUM_FRAMES, MIN_SIZE_TEST = 16, 224

    class Cfg:
        INPUT = Input

    settings = BenchmarkSettings(keep_rates=[1.0], input_size=None, batch_size=1, repeats=1, warmup=0, device="cpu",
                                 dtype="fp32", flops=False)
    assert settings.clip_size(Cfg) == (16, 224, 224)
    settings.input_size = [8, 32, 64]
    assert settings.clip_size(Cfg) == (8, 32, 64)
