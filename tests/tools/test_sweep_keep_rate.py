"""tools/sweep_keep_rate.py as a command: a sweep at a tiny size, pooling two sweeps, bad input."""
import json

import pytest
import torch
from detectron2.modeling import build_model

from evad_d2 import get_evad_cfg
from evad_d2.testing import TINY_CONFIG as TINY, run_tool

TOOL = "tools/sweep_keep_rate.py"


@pytest.mark.slow
def test_sweep_tool_writes_the_sweep_and_pools_sweeps(generated, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "model.pth"
    torch.save({"model": build_model(get_evad_cfg(TINY)).state_dict()}, weights)
    out = tmp_path / "sweep"
    done = run_tool(TOOL, "--config-file", TINY, "--dataset-root", str(generated[0]), "--keep-rates", "1.0", "0.7",
                    "--output", str(out), "--label", "seed 0", "MODEL.WEIGHTS", str(weights),
                    "MODEL.EVAD.LOC.SCORE_THRESH_TEST", "0.0", "DATALOADER.NUM_WORKERS", "0")
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = json.loads((out / "sweep.json").read_text())
    assert [(r["rule"], r["keep_rate"]) for r in sweep["rows"]] == [("attention", 1.0), ("attention", 0.7), ("random", 1.0), ("random", 0.7)]
    assert sweep["label"] == "seed 0" and (out / "sweep.png").stat().st_size > 0
    assert "| random | 0.7 |" in done.stdout

    summary_dir = tmp_path / "summary"
    done = run_tool(TOOL, "--combine", str(out / "sweep.json"), str(out / "sweep.json"), "--output", str(summary_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((summary_dir / "summary.json").read_text())
    assert [r["n"] for r in summary["rows"]] == [2, 2, 2, 2] and all(r["frame_map_std"] == 0.0 for r in summary["rows"])
    assert (summary_dir / "summary.png").exists() and (summary_dir / "summary.md").exists()


@pytest.mark.slow
def test_sweep_tool_bad_input_exits_with_the_reason(tmp_path):
    done = run_tool(TOOL, "--config-file", TINY, "--dataset", "no_such_set", "MODEL.WEIGHTS", str(tmp_path / "w.pth"))
    assert done.returncode == 1 and "dataset 'no_such_set' is not registered" in done.stderr
    done = run_tool(TOOL, "--combine", str(tmp_path / "missing.json"))
    assert done.returncode == 2 and "--combine needs --output DIR" in done.stderr
    done = run_tool(TOOL, "--combine", str(tmp_path / "missing.json"), "--output", str(tmp_path / "o"))
    assert done.returncode == 1 and "missing.json: cannot read a keep-rate sweep" in done.stderr
