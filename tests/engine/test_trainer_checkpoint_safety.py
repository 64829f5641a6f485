"""train_net (evad_d2.engine.trainer) and checkpoints: a crafted pickle is refused in every mode;
kill -9 during the final save, then ``--resume``: the final model and metrics exist; a damaged
final model falls back and completes the run; resuming a finished run evaluates it again."""
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from detectron2.utils.events import EventStorage

from evad_d2.checkpoint import CheckpointFormatError, EVADCheckpointer
from evad_d2.engine.trainer import EVADTrainer, setup, train_and_evaluate
from evad_d2.testing import (
    REPO_ROOT as ROOT,
    TINY_CONFIG as TINY,
    assert_same_weights,
    build_model_from_file,
    captured_warnings,
    folder_files,
    generate_dataset,
    run_training,
    train_args,
    write_crafted_checkpoint,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ava_like")
    return {**generate_dataset(root, "ckptsafety_test"), "root": str(root)}


@pytest.fixture(scope="module")
def finished_run(dataset, tmp_path_factory):
    """OUTPUT_DIR of an uninterrupted 6-iteration run (checkpoints at iterations 2 and 5, final)."""
    out = tmp_path_factory.mktemp("finished")
    trainer, _ = run_training(train_args(dataset, out))
    return out, trainer._last_eval_results


def test_crafted_pickle_is_refused_by_train_net_in_every_mode(dataset, tmp_path):
    marker = tmp_path / "MARKER"
    path = write_crafted_checkpoint(tmp_path / "crafted.pkl", marker)
    with pytest.raises(CheckpointFormatError, match="crafted.pkl: refused to load"), EventStorage():
        train_and_evaluate(train_args(dataset, tmp_path / "eval", "MODEL.WEIGHTS", path, eval_only=True))
    # Training from MODEL.WEIGHTS, and --resume where last_checkpoint names the file.
    out = tmp_path / "train"
    args = train_args(dataset, out, "MODEL.WEIGHTS", path)
    with pytest.raises(CheckpointFormatError, match="crafted.pkl: refused to load"):
        EVADTrainer(setup(args)).resume_or_load(resume=False)
    shutil.copy(path, out / "model_0000002.pkl")
    (out / "last_checkpoint").write_text("model_0000002.pkl")
    args = train_args(dataset, out, resume=True)
    with pytest.raises(CheckpointFormatError, match="model_0000002.pkl: refused to load"):
        EVADTrainer(setup(args)).resume_or_load(resume=True)
    assert not marker.exists()


def _final_metrics(out):
    with open(out / "metrics.json") as f:
        return [json.loads(line) for line in f if "ava/frame_mAP@0.5" in line]


def _resume(dataset, out):
    args = train_args(dataset, out, resume=True)
    trainer = EVADTrainer(setup(args))
    trainer.resume_or_load(resume=True)
    trainer.train()
    return trainer


KILL_DURING_FINAL_SAVE = """
import os, signal, sys
import torch
from detectron2.engine import default_argument_parser
from evad_d2.data import register_ava
from evad_d2.engine.trainer import train_and_evaluate

root, train_name, val_name = sys.argv[1:4]
register_ava(train_name, root, "train", "2.2", "video")
register_ava(val_name, root, "val", "2.2", "video")
real_save = torch.save

def save_then_die(obj, f, *args, **kwargs):
    if "model_final" in os.path.basename(str(getattr(f, "name", f))):
        f.write(b"PK\\x03\\x04 the first bytes of the final model")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)

torch.save = save_then_die
train_and_evaluate(default_argument_parser().parse_args(sys.argv[4:]))
"""


def test_kill_during_the_final_save_then_resume_saves_and_evaluates_the_final_model(dataset, finished_run, tmp_path):
    straight_out, straight_results = finished_run
    out = tmp_path / "run"
    script = tmp_path / "kill_during_final_save.py"
    script.write_text(KILL_DURING_FINAL_SAVE)
    args = train_args(dataset, out)
    cmd = [sys.executable, str(script), dataset["root"], dataset["train"], dataset["val"]]
    cmd += ["--config-file", args.config_file, *args.opts]
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    # Killed mid-write: no file carries the final model's name, last_checkpoint names the last complete one.
    files = folder_files(out)
    assert "model_final.pth" not in files and "model_0000005.pth" in files
    assert any(f.startswith(".model_final.pth.") and f.endswith(".tmp") for f in files)
    assert (out / "last_checkpoint").read_text() == "model_0000005.pth"
    assert _final_metrics(out) == []

    with captured_warnings("evad_d2.engine.checkpointing") as warnings:
        resumed = _resume(dataset, out)
    assert resumed.start_iter == 6 and resumed.iter == 6
    assert any("model_final.pth does not exist: saving it again" in w for w in warnings)
    assert not any(f.endswith(".tmp") for f in folder_files(out))
    final = torch.load(out / "model_final.pth", weights_only=False)
    last = torch.load(out / "model_0000005.pth", weights_only=False)
    assert final["iteration"] == last["iteration"] == 5 and final["trainer"]["iteration"] == 5
    for k, v in last["model"].items():
        assert torch.equal(final["model"][k], v), k
    target = build_model_from_file(TINY)
    EVADCheckpointer(target).load(str(out / "model_final.pth"))
    assert_same_weights(target, last["model"])
    # The final evaluation ran, recorded at the iteration an uninterrupted run records it at.
    (metrics,) = _final_metrics(out)
    (straight_metrics,) = _final_metrics(straight_out)
    assert metrics["iteration"] == straight_metrics["iteration"] == 6
    assert resumed._last_eval_results["ava"]["frame_mAP@0.5"] == pytest.approx(
        straight_results["ava"]["frame_mAP@0.5"], abs=1e-9
    )
    assert os.path.exists(out / "inference" / dataset["val"] / "ava_metrics.json")


def test_resume_with_a_damaged_final_model_falls_back_and_completes_the_run(dataset, finished_run, tmp_path):
    straight_out, straight_results = finished_run
    out = tmp_path / "run"
    shutil.copytree(straight_out, out)
    # What a non-atomic save killed after tagging left: last_checkpoint names a 0-byte final model.
    (out / "model_final.pth").write_bytes(b"")
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    with captured_warnings("fvcore.common.checkpoint") as warnings:
        resumed = _resume(dataset, out)
    (warning,) = [w for w in warnings if "resumed instead" in w]
    assert str(out / "model_final.pth") in warning and str(out / "model_0000005.pth") in warning
    assert resumed.start_iter == 6
    assert EVADCheckpointer(build_model_from_file(TINY)).load(str(out / "model_final.pth"))["iteration"] == 5
    assert resumed._last_eval_results["ava"]["frame_mAP@0.5"] == pytest.approx(
        straight_results["ava"]["frame_mAP@0.5"], abs=1e-9
    )


def test_resuming_a_finished_run_keeps_its_final_model_and_evaluates_it_again(dataset, finished_run, tmp_path):
    straight_out, straight_results = finished_run
    out = tmp_path / "run"
    shutil.copytree(straight_out, out)
    before = os.stat(out / "model_final.pth")
    resumed = _resume(dataset, out)
    after = os.stat(out / "model_final.pth")
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not saved again
    assert [m["iteration"] for m in _final_metrics(out)] == [6, 6]
    assert resumed._last_eval_results["ava"]["frame_mAP@0.5"] == pytest.approx(
        straight_results["ava"]["frame_mAP@0.5"], abs=1e-9
    )
