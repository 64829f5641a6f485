"""Checkpoints that never run code, never appear half-written, and resume after a crash.

* crafted pickles (``os.system`` in ``__reduce__``) through every entry point that loads
  ``MODEL.WEIGHTS`` or ``last_checkpoint``: refused with an error naming the file, marker not made
  (config files with Python YAML tags too);
* model-zoo ``.pkl`` files of numpy arrays load with detectron2's semantics;
* empty, truncated and text files are ``DamagedCheckpointError`` naming the file;
* saves interrupted by Ctrl-C or a full disk leave no file under the checkpoint's name;
* kill -9 during the final save, then ``--resume``: the final model and metrics exist;
* ``--resume`` from a damaged checkpoint falls back to the newest complete one, with a warning.
"""
import contextlib
import errno
import json
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
import yaml
from detectron2.utils.events import EventStorage

# Shared helpers of the other test modules (tests/ is a package).
from tests.checkpoint import test_official_evad as test_checkpoint_official
from tests.checkpoint.test_videomae import build
from tests.engine.test_predictor import tiny_cfg, write_video
from tests.utils.test_safe_pickle import RunsShellCommand
from tests.test_train_net import ROOT, TINY, generate_dataset, make_args, run_training

from evad_d2 import get_evad_cfg
from evad_d2.checkpoint import CheckpointFormatError, DamagedCheckpointError, EVADCheckpointer, load_pickle_checkpoint
from evad_d2.checkpoint.convert_official import official_converter_cfg
from evad_d2.engine.predictor import EVADPredictor
from evad_d2.engine.trainer import EVADTrainer, setup, train_and_evaluate
from evad_d2.utils.atomic_io import atomic_write, remove_stale_temporaries


def write_crafted(path, marker):
    """A model-zoo-shaped checkpoint whose one weight runs a shell command when unpickled."""
    payload = {"model": {"backbone.net.norm.weight": RunsShellCommand(marker)}, "__author__": "attacker"}
    if str(path).endswith(".pkl"):
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    else:
        torch.save(payload, str(path))
    return str(path)


def run_tool(name, argv):
    """``python tools/NAME.py ARGV`` from the repository root: (exit code, stderr)."""
    res = subprocess.run([sys.executable, os.path.join("tools", f"{name}.py"), *argv], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return res.returncode, res.stderr


@contextlib.contextmanager
def captured_warnings(logger_name):
    """Warning messages of one logger (detectron2's setup_logger stops them reaching caplog)."""
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def folder_files(folder):
    return sorted(os.listdir(folder))


def randomised(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return model


def assert_same_weights(model, state_dict):
    for k, v in model.state_dict().items():
        assert torch.equal(v, torch.as_tensor(state_dict[k])), k


# ---------------------------------------------------------------------------------- atomic writes
@pytest.mark.parametrize(
    "error", [KeyboardInterrupt("Ctrl-C"), OSError(errno.ENOSPC, "No space left on device")], ids=["ctrl_c", "disk_full"]
)
def test_interrupted_atomic_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, error):
    path = tmp_path / "result.json"
    path.write_text("old")
    with pytest.raises(type(error)):
        with atomic_write(str(path), "w") as f:
            f.write("new, half written")
            raise error
    assert path.read_text() == "old"
    assert folder_files(tmp_path) == ["result.json"]


def test_atomic_write_is_invisible_until_complete(tmp_path):
    path = tmp_path / "model.pth"
    with atomic_write(str(path)) as f:
        f.write(b"abc")
        f.flush()
        # While writing: nothing under the name, one hidden temporary beside it.
        assert not path.exists()
        (tmp,) = folder_files(tmp_path)
        assert tmp.startswith(".model.pth.") and tmp.endswith(".tmp")
    assert path.read_bytes() == b"abc" and folder_files(tmp_path) == ["model.pth"]


def test_stale_temporaries_of_one_name_are_removed(tmp_path):
    for name in (".model_final.pth.0123abcd.tmp", ".model_final.pth.ffffffff.tmp", ".other.pth.01234567.tmp"):
        (tmp_path / name).write_bytes(b"partial")
    removed = remove_stale_temporaries(str(tmp_path / "model_final.pth"))
    assert len(removed) == 2
    assert folder_files(tmp_path) == [".other.pth.01234567.tmp"]


class FailingWrites:
    """A file whose writes raise ``error`` once ``limit`` bytes are written (Ctrl-C, a full disk)."""

    def __init__(self, f, error, limit):
        self.f, self.error, self.limit = f, error, limit

    def write(self, b):
        if self.f.tell() + len(b) > self.limit:
            raise self.error
        return self.f.write(b)

    def flush(self):
        self.f.flush()


@pytest.mark.parametrize(
    "error, raised, message",
    [
        (KeyboardInterrupt(), KeyboardInterrupt, "interrupted while saving"),
        (OSError(errno.ENOSPC, "No space left on device"), OSError, "No space left on device while saving"),
    ],
    ids=["ctrl_c", "disk_full"],
)
def test_save_interrupted_inside_torch_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, error, raised, message):
    model = randomised(build(), 1)
    checkpointer = EVADCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000002", iteration=2)
    before = dict((k, v.clone()) for k, v in model.state_dict().items())
    real_save = torch.save
    # The error comes from the file's write inside torch's zip writer, as a real one does.
    monkeypatch.setattr(torch, "save", lambda obj, f: real_save(obj, FailingWrites(f, error, limit=20000)))
    randomised(model, 2)
    with pytest.raises(raised, match=f"{message} {tmp_path / 'model_0000005.pth'}: nothing was written"):
        checkpointer.save("model_0000005", iteration=5)
    monkeypatch.undo()
    assert folder_files(tmp_path) == ["last_checkpoint", "model_0000002.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000002.pth"
    target = build()
    assert EVADCheckpointer(target).load(str(tmp_path / "model_0000002.pth"))["iteration"] == 2
    assert_same_weights(target, before)


def test_save_removes_temporaries_a_killed_save_left(tmp_path):
    (tmp_path / ".model_final.pth.0123abcd.tmp").write_bytes(b"PK\x03\x04 killed")
    EVADCheckpointer(build(), str(tmp_path)).save("model_final")
    assert folder_files(tmp_path) == ["last_checkpoint", "model_final.pth"]


# ------------------------------------------------------------------------------ crafted pickles
@pytest.mark.parametrize("ext", [".pkl", ".pth", ".pyth"])
def test_crafted_checkpoint_is_refused_without_running_its_code(tmp_path, ext):
    marker = tmp_path / "MARKER"
    path = write_crafted(tmp_path / f"crafted{ext}", marker)
    with pytest.raises(CheckpointFormatError, match="crafted") as e:
        EVADCheckpointer(build()).load(path)
    assert "system" in str(e.value) and path in str(e.value)
    assert not isinstance(e.value, DamagedCheckpointError)  # refused, not damaged: no fallback
    assert not marker.exists()


@pytest.mark.slow
def test_crafted_pickle_is_refused_by_the_predictor_and_the_tools(tmp_path):
    marker = tmp_path / "MARKER"
    path = write_crafted(tmp_path / "crafted.pkl", marker)
    # tools/demo.py builds its model through EVADPredictor.
    with pytest.raises(CheckpointFormatError, match="posix.system|nt.system"):
        EVADPredictor(tiny_cfg("MODEL.WEIGHTS", path))
    video = tmp_path / "v.mp4"
    write_video(video, [np.full((64, 96, 3), 90, np.uint8)] * 20)
    demo_argv = ["--config-file", TINY, "--input", str(video), "--output", str(tmp_path / "out.mp4"), "--no-progress"]
    rc, err = run_tool("demo", demo_argv + ["MODEL.WEIGHTS", path])
    assert rc == 2
    assert "demo.py: error: MODEL.WEIGHTS:" in err
    rc, err = run_tool("export_model", ["--config-file", TINY, "--output", str(tmp_path / "exported"), "MODEL.WEIGHTS", path])
    assert rc == 2
    assert "refused to load" in err
    argv = ["--config-file", TINY, "--input", str(video), "--output-dir", str(tmp_path / "vis"), "MODEL.WEIGHTS", path]
    rc, err = run_tool("visualize_pruning", argv)
    assert rc == 2
    assert "refused to load" in err
    assert not marker.exists() and not (tmp_path / "exported" / "model.ts").exists()


def test_config_file_with_a_python_tag_is_refused_without_running_it(tmp_path):
    # detectron2's merge_from_file falls back to yaml.unsafe_load by default.
    marker = tmp_path / "MARKER"
    config = tmp_path / "crafted.yaml"
    config.write_text(f'_BASE_: "{TINY}"\nSEED: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(yaml.constructor.ConstructorError, match=f'python/object/apply:os.system(.|\n)*{config}", line 2'):
        get_evad_cfg(str(config))
    with pytest.raises(yaml.constructor.ConstructorError):
        official_converter_cfg(str(config), [], [])
    assert not marker.exists()


# ---------------------------------------------------------------------------- model-zoo pickles
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("layout", ["detectron2_zoo", "detectron2_zoo_exact_names", "bare_dict"])
def test_model_zoo_pickle_of_numpy_arrays_loads(tmp_path, protocol, layout):
    source = randomised(build(), 3)
    arrays = {k: v.numpy().copy() for k, v in source.state_dict().items()}
    payload = {
        "detectron2_zoo": {"model": arrays, "__author__": "someone", "matching_heuristics": True},
        "detectron2_zoo_exact_names": {"model": arrays, "__author__": "someone"},
        "bare_dict": arrays,
    }[layout]
    path = tmp_path / "weights.pkl"
    with open(path, "wb") as f:
        pickle.dump(payload, f, protocol=protocol)
    target = build()
    checkpointer = EVADCheckpointer(target)
    checkpointer.load(str(path))
    assert_same_weights(target, arrays)
    assert checkpointer.last_load["missing"] == [] and len(checkpointer.last_load["loaded"]) == len(arrays)


@pytest.mark.parametrize("protocol", [0, 1, 2])
def test_old_protocol_pickle_with_empty_and_fortran_arrays_loads(tmp_path, protocol):
    # Protocols 0-2 pickle an empty array's data as bytes(), a Fortran-ordered one transposed.
    weights = {"a.empty": np.zeros((0, 3), np.float32), "b.weight": np.arange(6, dtype=np.int64).reshape(2, 3).T}
    path = tmp_path / "old.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "x"}, f, protocol=protocol)
    loaded = load_pickle_checkpoint(str(path))["model"]
    assert loaded["a.empty"].shape == (0, 3) and loaded["a.empty"].dtype == np.float32
    assert np.array_equal(loaded["b.weight"], [[0, 3], [1, 4], [2, 5]])


def test_caffe2_pickle_is_read_as_detectron2_reads_it(tmp_path):
    w, b = np.ones((2, 3), np.float32), np.zeros(2, np.float32)
    path = tmp_path / "R-50.pkl"
    with open(path, "wb") as f:
        pickle.dump({"blobs": {"conv1_w": w, "conv1_b": b, "conv1_w_momentum": w}, "cfg": "TRAIN: ..."}, f, protocol=2)
    loaded = load_pickle_checkpoint(str(path))
    assert loaded["__author__"] == "Caffe2" and loaded["matching_heuristics"] is True
    assert sorted(loaded["model"]) == ["conv1_b", "conv1_w"]  # momenta dropped, as detectron2 does
    assert np.array_equal(loaded["model"]["conv1_w"], w)


@pytest.mark.parametrize(
    "weights, message",
    [
        ({"a.weight": np.array([1, "x"], dtype=object)}, "'a.weight' is a array of dtype object"),
        ({"a.weight": [1.0, 2.0]}, "'a.weight' is a list"),
        ({"a.weight": "text"}, "'a.weight' is a str"),
    ],
)
def test_pickle_weights_other_than_numeric_arrays_are_an_error_naming_the_key(tmp_path, weights, message):
    path = tmp_path / "odd.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "x"}, f)
    with pytest.raises(CheckpointFormatError, match=str(path) + ".*" + message.replace("(", r"\(")):
        load_pickle_checkpoint(str(path))


def test_pyth_release_of_official_evad_is_converted(tmp_path):
    # PySlowFast, which the official EVAD code is, saves .pyth files with "model_state".
    official = test_checkpoint_official.official_state_dict(test_checkpoint_official.TINY)
    path = tmp_path / "checkpoint_epoch_00011.pyth"
    torch.save({"epoch": 11, "model_state": official, "cfg": test_checkpoint_official.OFFICIAL_CFG_YAML}, str(path))
    model = build()
    checkpointer = EVADCheckpointer(model)
    checkpointer.load(str(path))
    assert checkpointer.last_load["format"] == "official_evad" and checkpointer.last_load["missing"] == []


def test_pyth_from_pycls_is_read_as_detectron2_reads_it(tmp_path):
    source = randomised(build(), 4)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    state["backbone.bn.num_batches_tracked"] = torch.tensor(3)
    path = tmp_path / "pycls.pyth"
    torch.save({"model_state": state, "epoch": 1}, str(path))
    target = build()
    checkpointer = EVADCheckpointer(target)
    checkpointer.load(str(path))
    assert_same_weights(target, state)
    assert checkpointer.last_load["unexpected"] == []  # num_batches_tracked dropped, as detectron2 does


# ---------------------------------------------------------------------------- damaged files
def _good_checkpoint_bytes(tmp_path):
    EVADCheckpointer(build(), str(tmp_path)).save("good")
    return (tmp_path / "good.pth").read_bytes()


DAMAGE = {
    "empty": (lambda good: b"", "is empty \\(0 bytes\\)"),
    "first_half": (lambda good: good[: len(good) // 2], "is truncated or damaged"),
    "all_but_10_bytes": (lambda good: good[:-10], "is truncated or damaged"),
    "text": (lambda good: b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\n", "is a text file.*git-lfs"),
    "html": (lambda good: b"<html><body>404 Not Found</body></html>", "is a text file.*404"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_checkpoint_is_an_error_naming_the_file_and_the_damage(tmp_path, kind):
    damage, message = DAMAGE[kind]
    path = tmp_path / "model_final.pth"
    path.write_bytes(damage(_good_checkpoint_bytes(tmp_path)))
    with pytest.raises(DamagedCheckpointError, match=f"{path}.*{message}"):
        EVADCheckpointer(build()).load(str(path))


def test_flipped_bit_in_the_weights_is_an_error_not_a_different_weight(tmp_path):
    # torch.load does not check the zip records' CRC-32: it would load a different weight.
    good = bytearray(_good_checkpoint_bytes(tmp_path))
    with zipfile.ZipFile(tmp_path / "good.pth") as archive:
        info = archive.getinfo("archive/data/0")  # the first tensor's bytes
    header = info.header_offset
    name_len, extra_len = (int.from_bytes(good[header + i : header + i + 2], "little") for i in (26, 28))
    good[header + 30 + name_len + extra_len + 7] ^= 0x10
    path = tmp_path / "model.pth"
    path.write_bytes(bytes(good))
    with pytest.raises(DamagedCheckpointError, match=f"{path} is damaged: its record archive/data/0 fails .*CRC"):
        EVADCheckpointer(build()).load(str(path))


def test_zip_with_a_broken_pickle_inside_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "model.pth"
    with zipfile.ZipFile(path, "w") as archive:  # valid CRCs, but no readable checkpoint inside
        archive.writestr("model/data.pkl", b"\x80\x02}q\x00(X")
        archive.writestr("model/version", b"3\n")
        archive.writestr("model/byteorder", b"little")
    with pytest.raises(DamagedCheckpointError, match=f"{path}: damaged checkpoint"):
        EVADCheckpointer(build()).load(str(path))


@pytest.mark.parametrize("content, message", [(b"", "is empty"), (b"\x80\x04\x95\x10", "not a readable pickle")])
def test_damaged_pickle_is_an_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "weights.pkl"
    path.write_bytes(content)
    with pytest.raises(DamagedCheckpointError, match=f"{path}.*{message}"):
        EVADCheckpointer(build()).load(str(path))


def test_missing_weights_file_is_file_not_found_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth: checkpoint file not found"):
        EVADCheckpointer(build()).load(str(tmp_path / "nowhere.pth"))


# ------------------------------------------------------------------- resume falls back
def _two_checkpoints(folder):
    """model_0000002.pth (weights seed 1, older) and model_0000005.pth (seed 2), tagged last."""
    model = randomised(build(), 1)
    checkpointer = EVADCheckpointer(model, str(folder))
    checkpointer.save("model_0000002", iteration=2)
    first = {k: v.clone() for k, v in model.state_dict().items()}
    randomised(model, 2)
    checkpointer.save("model_0000005", iteration=5)
    os.utime(folder / "model_0000002.pth", (1_000_000, 1_000_000))  # clearly older
    return first


@pytest.mark.parametrize("damage", ["empty", "truncated", "missing"])
def test_resume_from_a_damaged_checkpoint_falls_back_to_the_newest_complete_one(tmp_path, damage):
    first = _two_checkpoints(tmp_path)
    last = tmp_path / "model_0000005.pth"
    if damage == "missing":
        last.unlink()
    else:
        last.write_bytes(b"" if damage == "empty" else last.read_bytes()[:1000])
    target = build()
    checkpointer = EVADCheckpointer(target, str(tmp_path))
    with captured_warnings(checkpointer.logger.name) as warnings:
        extra = checkpointer.resume_or_load("", resume=True)
    assert extra["iteration"] == 2
    assert_same_weights(target, first)
    (warning,) = [w for w in warnings if "resumed instead" in w]
    assert str(last) in warning and str(tmp_path / "model_0000002.pth") in warning


def test_resume_with_no_complete_checkpoint_left_is_an_error_naming_the_tag_and_file(tmp_path):
    _two_checkpoints(tmp_path)
    for name in ("model_0000002.pth", "model_0000005.pth"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(DamagedCheckpointError, match="cannot resume: .*last_checkpoint names .*model_0000005.pth"):
        EVADCheckpointer(build(), str(tmp_path)).resume_or_load("", resume=True)


def test_newest_complete_checkpoint_is_the_latest_written(tmp_path):
    _two_checkpoints(tmp_path)
    checkpointer = EVADCheckpointer(build(), str(tmp_path))
    checkpointer.save("model_final", iteration=5)
    os.utime(tmp_path / "model_final.pth", (2_000_000, 2_000_000))  # same second as model_0000005
    os.utime(tmp_path / "model_0000005.pth", (2_000_000, 2_000_000))
    (tmp_path / "model_0000009.pth").write_bytes(b"")  # damaged: never a candidate
    (tmp_path / "notes.pth").write_bytes(b"")  # not a training checkpoint
    names = [os.path.basename(p) for p in checkpointer.complete_checkpoints()]
    assert names == ["model_final.pth", "model_0000005.pth", "model_0000002.pth"]


def test_resume_never_falls_back_past_a_crafted_file(tmp_path):
    _two_checkpoints(tmp_path)
    marker = tmp_path / "MARKER"
    write_crafted(tmp_path / "model_0000009.pkl", marker)
    (tmp_path / "last_checkpoint").write_text("model_0000009.pkl")
    with pytest.raises(CheckpointFormatError, match="model_0000009.pkl: refused to load"):
        EVADCheckpointer(build(), str(tmp_path)).resume_or_load("", resume=True)
    assert not marker.exists()


# ------------------------------------------------------------------------- through train_net
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ava_like")
    return {**generate_dataset(root, "ckptsafety_test"), "root": str(root)}


@pytest.fixture(scope="module")
def finished_run(dataset, tmp_path_factory):
    """OUTPUT_DIR of an uninterrupted 6-iteration run (checkpoints at iterations 2 and 5, final)."""
    out = tmp_path_factory.mktemp("finished")
    trainer, _ = run_training(make_args(dataset, out))
    return out, trainer._last_eval_results


def test_crafted_pickle_is_refused_by_train_net_in_every_mode(dataset, tmp_path):
    marker = tmp_path / "MARKER"
    path = write_crafted(tmp_path / "crafted.pkl", marker)
    with pytest.raises(CheckpointFormatError, match="crafted.pkl: refused to load"), EventStorage():
        train_and_evaluate(make_args(dataset, tmp_path / "eval", "MODEL.WEIGHTS", path, eval_only=True))
    # Training from MODEL.WEIGHTS, and --resume where last_checkpoint names the file.
    out = tmp_path / "train"
    args = make_args(dataset, out, "MODEL.WEIGHTS", path)
    with pytest.raises(CheckpointFormatError, match="crafted.pkl: refused to load"):
        EVADTrainer(setup(args)).resume_or_load(resume=False)
    shutil.copy(path, out / "model_0000002.pkl")
    (out / "last_checkpoint").write_text("model_0000002.pkl")
    args = make_args(dataset, out, resume=True)
    with pytest.raises(CheckpointFormatError, match="model_0000002.pkl: refused to load"):
        EVADTrainer(setup(args)).resume_or_load(resume=True)
    assert not marker.exists()


def _final_metrics(out):
    with open(out / "metrics.json") as f:
        return [json.loads(line) for line in f if "ava/frame_mAP@0.5" in line]


def _resume(dataset, out):
    args = make_args(dataset, out, resume=True)
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
    args = make_args(dataset, out)
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
    target = build()
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
    assert EVADCheckpointer(build()).load(str(out / "model_final.pth"))["iteration"] == 5
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
