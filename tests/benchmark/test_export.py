"""``tools/benchmark.py --part export`` (evad_d2.benchmark.export): eager vs torch.compile vs the
exported graphs vs ONNX Runtime by keep rate, at a tiny size: the rows' schema, each kind's
outputs against eager, and the errors."""
import math

import pytest

from evad_d2.benchmark.export import GRAPH_KINDS, benchmark_export, export_graph_kinds
from evad_d2.benchmark.timing import BenchmarkSettings
from evad_d2.config import get_evad_cfg
from evad_d2.testing import SHALLOW_TINY, TINY_CONFIG, run_tool

SMALL = [*SHALLOW_TINY, "MODEL.EVAD.LOC.SCORE_THRESH_TEST", "0.0"]
SIZE = (8, 64, 96)


def _settings(keep_rates, batch_size=1):
    return BenchmarkSettings(keep_rates=keep_rates, input_size=SIZE, batch_size=batch_size, repeats=2, warmup=0,
                             device="cpu", dtype="fp32", flops=False)


def _check_rows(rows, kinds, keep_rates):
    assert [r["keep_rate"] for r in rows] == keep_rates
    for r in rows:
        assert r["graphs"] == list(kinds) and r["input_size"] == list(SIZE) and r["batch_size"] == 1
        for kind in kinds:
            assert len(r[f"{kind}_latency_all_ms"]) == 2 and r[f"{kind}_clips_per_s"] > 0
            assert r[f"{kind}_clips_per_s"] == pytest.approx(1000 / r[f"{kind}_latency_ms"])
            assert r[f"{kind}_frames_per_s"] == pytest.approx(SIZE[0] * r[f"{kind}_clips_per_s"])
            assert r[f"{kind}_prepare_s"] > 0
            # Threshold 0: all 8 proposals out, so equal shapes; scores within 1e-4, boxes (pixels
            # of a 96-pixel-wide clip) within 1e-4 of their size.
            assert r[f"{kind}_max_score_diff"] < 1e-4 and r[f"{kind}_max_abs_diff"] < 1e-4 * SIZE[2]
            assert r[f"{kind}_max_score_diff"] <= r[f"{kind}_max_abs_diff"]
        assert r["eager_max_abs_diff"] == r["eager_max_score_diff"] == 0.0 and "eager_speedup_vs_eager" not in r
        for kind in kinds[1:]:
            assert r[f"{kind}_speedup_vs_eager"] == pytest.approx(r[f"{kind}_clips_per_s"] / r["eager_clips_per_s"])


def test_graph_kinds_and_errors():
    assert export_graph_kinds(compile=False) == ("eager", "torchscript", "exported_program", "onnxruntime")
    assert export_graph_kinds(compile=True) == ("eager", "compiled", "torchscript", "exported_program", "onnxruntime")
    assert set(export_graph_kinds(True)) == set(GRAPH_KINDS)
    cfg = get_evad_cfg(TINY_CONFIG, SMALL)
    with pytest.raises(SystemExit, match="--batch-size 1"):
        benchmark_export(cfg, _settings([1.0], batch_size=2))
    with pytest.raises(SystemExit, match="must include 'eager' and be among"):
        benchmark_export(cfg, _settings([1.0]), graphs=("eager", "tensorrt"))
    with pytest.raises(SystemExit, match="must include 'eager'"):
        benchmark_export(cfg, _settings([1.0]), graphs=("onnxruntime",))
    for part in (["--part", "backbone"], ["--part", "model", "--mode", "train"]):
        res = run_tool("tools/benchmark.py", "--config-file", TINY_CONFIG, *part, "--compile")
        assert res.returncode != 0 and "use it with --part model or --part export (inference)" in res.stderr


@pytest.mark.slow  # an ONNX export, a trace and a torch.export per keep rate: ~1 min on a loaded CPU
def test_exported_graphs_and_onnxruntime_by_keep_rate():
    kinds = export_graph_kinds(compile=False)
    rows = benchmark_export(get_evad_cfg(TINY_CONFIG, SMALL), _settings([1.0, 0.5]))
    _check_rows(rows, kinds, [1.0, 0.5])


@pytest.mark.slow  # TorchInductor compiles C++ kernels: minutes on a loaded 2-core CPU
def test_compiled_against_eager():
    rows = benchmark_export(get_evad_cfg(TINY_CONFIG, SMALL), _settings([0.5]), graphs=("eager", "compiled"))
    _check_rows(rows, ("eager", "compiled"), [0.5])
    assert math.isfinite(rows[0]["compiled_max_abs_diff"])
