"""datasets/README.md's tutorial (CVAT export -> convert -> validate -> fine-tune -> evaluate), run
as written: the commands between its ``tutorial:start`` / ``tutorial:end`` markers, with only
``WORK`` and ``CHECKPOINT`` pointed at this test's files."""
import json
import os
import subprocess
import sys

import pytest
import torch

from evad_d2.data.cvat_example import ACTION_NAMES
from evad_d2.data.formats.label_map import read_label_map
from evad_d2.testing import REPO_ROOT, build_model_from_file

README = os.path.join(REPO_ROOT, "datasets", "README.md")
QUICKSTART_CONFIG = os.path.join(REPO_ROOT, "configs", "quickstart", "EVAD_tiny_ava_like_cpu.yaml")


def tutorial_script() -> str:
    with open(README) as f:
        text = f.read()
    block = text.split("<!-- tutorial:start -->", 1)[1].split("<!-- tutorial:end -->", 1)[0].strip()
    assert block.startswith("```bash\n") and block.endswith("```")
    return block[len("```bash\n"):-3]


@pytest.mark.slow
def test_custom_data_tutorial_runs_as_written(tmp_path):
    # A 6-class checkpoint of the quick-start's architecture stands in for the quick-start model.
    checkpoint = tmp_path / "model_6_classes.pth"
    torch.save({"model": build_model_from_file(QUICKSTART_CONFIG).state_dict()}, checkpoint)
    work = tmp_path / "work"
    script = tutorial_script()
    for line, value in (("WORK=/tmp/evad_cvat_tutorial", f"WORK={work}"),
                        ("CHECKPOINT=output/quickstart/model_final.pth", f"CHECKPOINT={checkpoint}")):
        assert line in script
        script = script.replace(line, value)
    # `python` is this interpreter, as in an activated virtual environment.
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    run = subprocess.run(["bash", "-e", "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]

    ann = work / "datasets" / "ava" / "annotations"
    assert read_label_map(str(ann / "ava_action_list_v2.2.pbtxt")) == dict(enumerate(ACTION_NAMES, start=1))
    assert (work / "datasets" / "ava" / "frame_lists" / "val.csv").exists()
    # step 3: the converted data passes the validator and the doctor
    assert "OK: " in run.stdout and "no known cause of a zero mAP found" in run.stdout
    # step 4: the classifiers were re-initialised (6 -> 5 classes), everything else loaded
    log = (work / "output" / "log.txt").read_text()
    assert "action-classifier tensors keep their initialisation (MODEL.EVAD.CHECKPOINT.NEW_ACTION_CLASSES)" in log
    assert "action_logits" in log and "(checkpoint (6," in log
    metrics = json.loads((work / "output" / "inference" / "ava_v2.2_val" / "ava_metrics.json").read_text())
    assert metrics["mAP"] is not None and 0.0 <= metrics["mAP"] <= 100.0 and len(metrics["per_class"]) == 5
    # step 5: the command-line evaluation printed the frame-mAP of the same file
    assert "frame-mAP@0.5IOU:" in run.stdout
