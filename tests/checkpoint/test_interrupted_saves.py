"""EVADCheckpointer.save interrupted inside torch.save (Ctrl-C, a full disk) keeps the previous
checkpoint and names the file; a save removes the temporaries a killed save left."""
import errno

import pytest
import torch

from evad_d2.checkpoint import EVADCheckpointer
from evad_d2.testing import (
    TINY_CONFIG as TINY,
    assert_same_weights,
    build_model_from_file,
    folder_files,
    randomise_weights,
)


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
    model = randomise_weights(build_model_from_file(TINY), 1)
    checkpointer = EVADCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000002", iteration=2)
    before = dict((k, v.clone()) for k, v in model.state_dict().items())
    real_save = torch.save
    # The error comes from the file's write inside torch's zip writer, as a real one does.
    monkeypatch.setattr(torch, "save", lambda obj, f: real_save(obj, FailingWrites(f, error, limit=20000)))
    randomise_weights(model, 2)
    with pytest.raises(raised, match=f"{message} {tmp_path / 'model_0000005.pth'}: nothing was written"):
        checkpointer.save("model_0000005", iteration=5)
    monkeypatch.undo()
    assert folder_files(tmp_path) == ["last_checkpoint", "model_0000002.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000002.pth"
    target = build_model_from_file(TINY)
    assert EVADCheckpointer(target).load(str(tmp_path / "model_0000002.pth"))["iteration"] == 2
    assert_same_weights(target, before)


def test_save_removes_temporaries_a_killed_save_left(tmp_path):
    (tmp_path / ".model_final.pth.0123abcd.tmp").write_bytes(b"PK\x03\x04 killed")
    EVADCheckpointer(build_model_from_file(TINY), str(tmp_path)).save("model_final")
    assert folder_files(tmp_path) == ["last_checkpoint", "model_final.pth"]
