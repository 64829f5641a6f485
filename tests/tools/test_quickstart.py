"""End-to-end smoke test of tools/quickstart.py (the README's first command), at 3 iterations.

The real run (600 iterations, about 10 CPU-minutes) is what README's Quick-start section reports;
this test checks the command wires every step: dataset generation, training, evaluation, the
annotated example video, the pruning pictures and the summary.
"""
import json
import os

import av
import pytest

from evad_d2.testing import run_tool


@pytest.mark.slow
def test_quickstart_generates_trains_evaluates_and_writes_its_examples(tmp_path):
    out = tmp_path / "out"
    res = run_tool(
        "tools/quickstart.py", "--output-dir", out,
        "SOLVER.MAX_EPOCHS", "0", "SOLVER.MAX_ITER", "3", "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", "0",
        env={"EVAD_DATASETS": str(tmp_path / "datasets")}, timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith("quickstart frame-mAP@0.5: ")
    fmap = float(last.rsplit(" ", 1)[1])

    data = tmp_path / "datasets" / "generated" / "ava_like"
    assert (data / "generator_stamp.json").is_file()
    assert len([v for v in os.listdir(data / "videos") if v.startswith("train_")]) == 160

    summary = json.loads((out / "quickstart_summary.json").read_text())
    assert set(summary) == {"frame-mAP@0.5", "person-AP@0.5", "train_and_eval_minutes"}
    assert round(summary["frame-mAP@0.5"], 2) == fmap and 0.0 <= fmap <= 100.0
    assert (out / "model_final.pth").is_file()
    rows = (out / "inference" / "ava_like_val" / "ava_detections.csv").read_text().splitlines()
    assert all(len(r.split(",")) == 8 for r in rows)
    with av.open(str(out / "demo" / "demo.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) > 0
    for picture in ("demo/demo_frame.png", "pruning/pruning.png", "pruning/decoder_attention.png"):
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", picture
