"""Atomic writes (evad_d2.utils.atomic_io): an interrupted write (Ctrl-C, a full disk) keeps the old
file and leaves no temporary; nothing is visible under the name until complete; stale temporaries go."""
import errno

import pytest

from evad_d2.utils.atomic_io import atomic_write, remove_stale_temporaries
from evad_d2.testing import (
    folder_files,
)


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
