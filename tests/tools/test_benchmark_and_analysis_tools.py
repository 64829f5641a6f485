"""tools/analyze_model.py, tools/benchmark.py and tools/benchmark_data.py at minimal sizes, through their command
lines (end-to-end smoke tests, marked slow)."""
import json
import subprocess
import sys

import pytest

from evad_d2.data.synthetic import GeneratorSettings, generate
from evad_d2.testing import REPO_ROOT as ROOT, SHALLOW_TINY, TINY_CONFIG as TINY, run_tool, tool_output



@pytest.mark.slow
def test_analyze_model_parameters_and_flops(tmp_path):
    out = tmp_path / "analysis.json"
    tool_output("tools/analyze_model.py", "--config-file", TINY, "--tasks", "parameter", "flop", "--keep-rates", "1.0", "0.5", "--json", str(out))
    res = json.loads(out.read_text())
    params = res["parameters"]
    parts = ["backbone", "neck", "localization_head", "action_head"]
    assert params["total"] == sum(params[p] for p in parts)
    assert all(params[p] > 0 for p in parts)
    g = res["gflops"]
    assert g["total"] > 0 and all(g[p] > 0 for p in parts)
    by_rate = res["gflops_by_keep_rate"]
    assert by_rate["0.5"]["backbone"] < by_rate["1.0"]["backbone"]
    # The neck and the localization head see keyframe tokens only, which pruning never drops.
    assert by_rate["0.5"]["localization_head"] == pytest.approx(by_rate["1.0"]["localization_head"])
    assert by_rate["0.5"]["neck"] == pytest.approx(by_rate["1.0"]["neck"])


@pytest.mark.slow
def test_benchmark_backbone_writes_one_row_per_keep_rate(tmp_path):
    out = tmp_path / "bench.json"
    tool_output(
        "tools/benchmark.py", "--config-file", TINY, "--part", "backbone", "--keep-rates", "1.0", "0.7", "0.5",
        "--input-size", "8", "64", "64", "--repeats", "2", "--json", str(out),
    )
    rows = json.loads(out.read_text())
    assert [r["keep_rate"] for r in rows] == [1.0, 0.7, 0.5]
    for r in rows:
        assert r["gflops"] > 0 and r["clips_per_s"] > 0 and len(r["latency_all_ms"]) == 2
    tokens = [r["tokens"] for r in rows]
    assert tokens[0] == 64 and tokens[0] > tokens[1] > tokens[2]
    assert rows[0]["gflops"] > rows[1]["gflops"] > rows[2]["gflops"]
    # The method's count never exceeds what the fast kernel executes (it recomputes QK^T columns).
    assert all(r["gflops"] <= r["gflops_executed"] + 1e-9 for r in rows)


@pytest.mark.slow
def test_benchmark_model_end_to_end_and_model_only(tmp_path):
    out = tmp_path / "model.json"
    # Raw 32x64 frames: the predictor's test resize (short side 64, max 128) gives the network 64x128.
    stdout = tool_output(
        "tools/benchmark.py", "--config-file", TINY, "--part", "model", "--keep-rates", "1.0", "0.7", "0.5",
        "--input-size", "8", "32", "64", "--repeats", "2", "--json", str(out),
    )
    assert "model inference" in stdout and "model-only time per part" in stdout
    rows = json.loads(out.read_text())
    assert [r["keep_rate"] for r in rows] == [1.0, 0.7, 0.5]
    for r in rows:  # the per-part pass: every part of EVAD, the rest, the total
        parts = {k: r[f"model_part_{k}_ms"] for k in ("backbone_net", "backbone", "localization_head", "action_head", "other", "total")}
        assert 0 < parts["backbone_net"] <= parts["backbone"] < parts["total"]
        # Two calls: medians are means, so the per-call rest adds up with the parts' medians.
        assert 0 <= parts["other"] == pytest.approx(parts["total"] - parts["backbone"] - parts["localization_head"] - parts["action_head"])
    for r in rows:
        assert (r["part"], r["mode"], r["batch_size"]) == ("model", "inference", 1)
        assert r["input_size"] == [8, 32, 64] and r["model_input_size"] == [8, 64, 128]
        for prefix in ("", "model_"):
            lat = r[f"{prefix}latency_all_ms"]
            assert len(lat) == 2 and all(x > 0 for x in lat)
            assert r[f"{prefix}latency_ms"] == pytest.approx(sorted(lat)[0] / 2 + sorted(lat)[1] / 2)
            assert r[f"{prefix}clips_per_s"] == pytest.approx(1000.0 / r[f"{prefix}latency_ms"])
            assert r[f"{prefix}frames_per_s"] == pytest.approx(8 * r[f"{prefix}clips_per_s"])
        assert r["num_actors"] >= 0
        assert r["gflops"] <= r["gflops_executed"] + 1e-9
    # 4x4x8 = 128 tokens (32 in the keyframe slice); keep 0.7 twice: 128 -> 90 -> 63; keep 0.5:
    # 128 -> 64 -> 32 (never fewer than the keyframe tokens).
    assert [r["tokens"] for r in rows] == [128, 63, 32]
    assert rows[0]["gflops"] > rows[1]["gflops"] > rows[2]["gflops"] > 0
    assert rows[0]["gflops_ratio_vs_ref"] == 1.0 and rows[0]["speedup_vs_ref"] == 1.0
    assert rows[2]["gflops_ratio_vs_ref"] == pytest.approx(rows[2]["gflops"] / rows[0]["gflops"])


@pytest.mark.slow
def test_benchmark_training_step_time_and_peak_memory(tmp_path):
    out = tmp_path / "train.json"
    tool_output(
        "tools/benchmark.py", "--config-file", TINY, "--part", "model", "--mode", "train", "--keep-rates", "1.0", "0.5",
        "--input-size", "8", "64", "64", "--repeats", "2", "--json", str(out),
    )
    rows = json.loads(out.read_text())
    assert [r["keep_rate"] for r in rows] == [1.0, 0.5]
    for r in rows:
        assert (r["part"], r["mode"]) == ("model", "train")
        assert len(r["step_all_ms"]) == 2 and r["step_ms"] > 0
        assert r["clips_per_s"] == pytest.approx(1000.0 / r["step_ms"])
        assert "ru_maxrss" in r["memory_method"]
        # Gradients and AdamW's two moment buffers appear during the steps.
        assert r["memory_before_step_mb"] > 0 and r["step_memory_mb"] > 0
        assert r["peak_memory_mb"] == pytest.approx(r["memory_before_step_mb"] + r["step_memory_mb"])
    assert [r["tokens"] for r in rows] == [64, 16]
    assert rows[0]["gflops"] > rows[1]["gflops"] > 0


@pytest.mark.slow
def test_benchmark_loader_on_generated_dataset(tmp_path):
    root = tmp_path / "ava_like"
    subprocess.run(
        [sys.executable, "datasets/generate_ava_like.py", "--out", str(root), "--seed", "0", "--num-train-videos", "2",
         "--num-val-videos", "1", "--duration", "5", "--quiet"],
        cwd=ROOT, check=True,
    )
    with open(root / "annotations" / "ava_train_v2.2.csv") as f:
        keyframes = {tuple(line.split(",")[:2]) for line in f if line.strip()}
    out = tmp_path / "loader.json"
    tool_output(
        "tools/benchmark.py", "--config-file", TINY, "--loader", "--dataset-root", str(root), "--workers", "0", "1",
        "--num-batches", "3", "--json", str(out),
    )
    rows = json.loads(out.read_text())
    assert [r["num_workers"] for r in rows] == [0, 1]
    for r in rows:
        assert (r["part"], r["keep_rate"], r["gflops"]) == ("loader", None, None)
        assert r["clips_per_s"] > 0 and r["frames_per_s"] == pytest.approx(8 * r["clips_per_s"])
        assert r["num_keyframes"] == len(keyframes)


@pytest.mark.slow
def test_benchmark_loader_without_dataset_names_the_missing_data(tmp_path):
    missing = tmp_path / "nowhere"
    res = run_tool("tools/benchmark.py", "--config-file", TINY, "--part", "loader", "--dataset-root", missing)
    assert res.returncode != 0
    assert str(missing) in res.stderr and "generate_ava_like.py" in res.stderr


@pytest.mark.slow
@pytest.mark.parametrize("flag, dtype", [("--dtype", "bf16"), ("--precision", "fp16")])
def test_benchmark_model_under_autocast(tmp_path, flag, dtype):
    out = tmp_path / "amp.json"
    stdout = tool_output(
        "tools/benchmark.py", "--config-file", TINY, "--part", "model", "--keep-rates", "1.0", "0.5", flag, dtype,
        "--input-size", "8", "64", "64", "--repeats", "1", "--warmup", "0", "--no-flops", "--json", str(out),
    )
    assert f"batch 1, {dtype}" in stdout
    rows = json.loads(out.read_text())
    assert [r["dtype"] for r in rows] == [dtype, dtype]
    assert all(r["clips_per_s"] > 0 and r["model_clips_per_s"] > 0 for r in rows)
    assert [r["tokens"] for r in rows] == [64, 16]


@pytest.mark.slow
def test_benchmark_exported_graphs_against_eager(tmp_path):
    # The command line's wiring only (the rows' contents: tests/benchmark/test_export.py), on the
    # shallow tiny model at one keep rate: every graph kind is an export.
    out = tmp_path / "export.json"
    stdout = tool_output(
        "tools/benchmark.py", "--config-file", TINY, "--part", "export", "--keep-rates", "0.5",
        "--input-size", "8", "64", "96", "--repeats", "1", "--warmup", "0", "--json", str(out), *SHALLOW_TINY,
    )
    assert "export inference" in stdout
    rows = json.loads(out.read_text())
    assert [(r["keep_rate"], r["input_size"], r["part"]) for r in rows] == [(0.5, [8, 64, 96], "export")]
    for kind in rows[0]["graphs"][1:]:
        assert rows[0][f"{kind}_speedup_vs_eager"] == pytest.approx(rows[0][f"{kind}_clips_per_s"] / rows[0]["eager_clips_per_s"])
    assert {"torchscript", "exported_program"} <= set(rows[0]["graphs"])
    with pytest.raises(AssertionError, match="--batch-size 1"):
        tool_output("tools/benchmark.py", "--config-file", TINY, "--part", "export", "--batch-size", "2")


@pytest.mark.slow
def test_benchmark_data_on_a_tiny_generated_dataset(tmp_path):
    root = tmp_path / "ava_like"
    generate(str(root), GeneratorSettings(seed=0, num_train_videos=2, num_val_videos=0, duration=5), log=lambda *a: None)
    stdout = tool_output(
        "tools/benchmark_data.py", "--dataset-root", str(root), "--workers", "0", "--num-frames", "4",
        "--sampling-rate", "2", "--short-side", "64", "--batch-size", "1", "--num-batches", "1",
    )
    assert "workers=0:" in stdout and "clips/s" in stdout
