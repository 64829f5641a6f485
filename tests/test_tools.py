"""tools/analyze_model.py and tools/benchmark.py at minimal sizes, through their command lines."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny", "EVAD_tiny_test.yaml")


def run_tool(*argv):
    out = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_analyze_model_parameters_and_flops(tmp_path):
    out = tmp_path / "analysis.json"
    run_tool("tools/analyze_model.py", "--config-file", TINY, "--tasks", "parameter", "flop", "--keep-rates", "1.0", "0.5", "--json", str(out))
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


def test_benchmark_backbone_writes_one_row_per_keep_rate(tmp_path):
    out = tmp_path / "bench.json"
    run_tool(
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
