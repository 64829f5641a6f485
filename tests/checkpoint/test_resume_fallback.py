"""``resume`` from a damaged checkpoint falls back to the newest complete one (with a warning), never
past a crafted file; with none left it is an error naming the tag and the file."""
import os

import pytest

from evad_d2.checkpoint import CheckpointFormatError, DamagedCheckpointError, EVADCheckpointer
from evad_d2.testing import (
    TINY_CONFIG as TINY,
    assert_same_weights,
    build_model_from_file,
    captured_warnings,
    randomise_weights,
    write_crafted_checkpoint,
)


def _two_checkpoints(folder):
    """model_0000002.pth (weights seed 1, older) and model_0000005.pth (seed 2), tagged last."""
    model = randomise_weights(build_model_from_file(TINY), 1)
    checkpointer = EVADCheckpointer(model, str(folder))
    checkpointer.save("model_0000002", iteration=2)
    first = {k: v.clone() for k, v in model.state_dict().items()}
    randomise_weights(model, 2)
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
    target = build_model_from_file(TINY)
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
        EVADCheckpointer(build_model_from_file(TINY), str(tmp_path)).resume_or_load("", resume=True)


def test_newest_complete_checkpoint_is_the_latest_written(tmp_path):
    _two_checkpoints(tmp_path)
    checkpointer = EVADCheckpointer(build_model_from_file(TINY), str(tmp_path))
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
    write_crafted_checkpoint(tmp_path / "model_0000009.pkl", marker)
    (tmp_path / "last_checkpoint").write_text("model_0000009.pkl")
    with pytest.raises(CheckpointFormatError, match="model_0000009.pkl: refused to load"):
        EVADCheckpointer(build_model_from_file(TINY), str(tmp_path)).resume_or_load("", resume=True)
    assert not marker.exists()
