"""python -m evad_d2.evaluation.ava (evaluation/ava/cli.py) and tools/benchmark_ava_eval.py end to end."""
import json
import subprocess
import sys

import pytest

from evad_d2.evaluation.ava import cli as ava_cli
from evad_d2.evaluation.ava import (
    main,
)
from evad_d2.testing import AVA_GT3 as GT3, run_tool, write_ava_files


def test_command_line(tmp_path, capsys):
    det = [(v, t, b, c, 0.9) for v, t, b, c, _ in GT3 if c != 3]
    gt, det_p, lm, ex = write_ava_files(tmp_path, GT3, det)
    out_json, out_png = tmp_path / "m.json", tmp_path / "ap.png"
    rc = main(["--groundtruth", gt, "--detections", det_p, "--labelmap", lm, "--exclusions", ex,
               "--json", str(out_json), "--plot", str(out_png)])
    assert rc == 0
    data = json.loads(out_json.read_text())
    assert data["mAP"] == pytest.approx(200 / 3)
    assert data["per_class"] == {"1": 100.0, "2": 100.0, "3": 0.0}
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "66.6667" in capsys.readouterr().out

    # Pixel boxes are rejected with file:line.
    with open(det_p, "a") as f:
        f.write("vidA,0902,10,20,300,400,1,0.9\n")
    assert main(["--groundtruth", gt, "--detections", det_p, "--labelmap", lm, "--json", str(out_json)]) == 2
    assert f"{det_p}:4" in capsys.readouterr().err


def test_command_line_module_entry(tmp_path):
    gt, det_p, lm, _ = write_ava_files(tmp_path, GT3, [(v, t, b, c, 0.9) for v, t, b, c, _ in GT3])
    out_json = tmp_path / "m.json"
    proc = subprocess.run(
        [sys.executable, "-m", "evad_d2.evaluation.ava", "--groundtruth", gt, "--detections", det_p,
         "--labelmap", lm, "--json", str(out_json)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out_json.read_text())["mAP"] == pytest.approx(100.0)


def test_command_line_help_tells_the_protocols_apart(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "ava_eval_helper.py" in out and "get_ava_performance.py" in out
    assert "ava_action_list_v2.2_for_activitynet_2019.pbtxt" in out
    assert "the 50 highest-scored rows" in out and "ignored (a frame is listed by any" in out


def test_command_line_json_is_written_atomically(tmp_path, monkeypatch):
    gt, det_p, lm, _ = write_ava_files(tmp_path, GT3, [(v, t, b, c, 0.9) for v, t, b, c, _ in GT3])
    out_json = tmp_path / "m.json"
    out_json.write_text("old")

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ava_cli.json, "dump", fail)
    with pytest.raises(KeyboardInterrupt):
        main(["-g", gt, "-d", det_p, "-l", lm, "--json", str(out_json)])
    assert out_json.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    monkeypatch.undo()
    assert main(["-g", gt, "-d", det_p, "-l", lm, "--json", str(out_json)]) == 0
    assert json.loads(out_json.read_text())["mAP"] == 100.0


@pytest.mark.slow
def test_benchmark_ava_eval_tool_end_to_end(tmp_path):
    """tools/benchmark_ava_eval.py at a tiny size: files and evaluator scored alike."""
    out_json = tmp_path / "bench.json"
    proc = run_tool(
        "tools/benchmark_ava_eval.py", "--videos", "1", "--seconds", "20", "--boxes", "2", "--protocols", "pyslowfast",
        "activitynet", "--evaluator", "--cpu", "-1", "--json", out_json, "--tmpdir", tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(out_json.read_text())
    assert [r["protocol"] for r in out["results"]] == ["pyslowfast", "activitynet"]
    assert out["evaluator"][0]["cli_equal"] is True
