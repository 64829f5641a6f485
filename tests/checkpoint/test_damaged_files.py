"""Empty, truncated, bit-flipped and text files are ``DamagedCheckpointError`` naming the file and
the damage; a missing weights file is FileNotFoundError naming it."""
import zipfile

import pytest

from evad_d2.checkpoint import DamagedCheckpointError, EVADCheckpointer
from evad_d2.testing import (
    TINY_CONFIG as TINY,
    build_model_from_file,
)


def _good_checkpoint_bytes(tmp_path):
    EVADCheckpointer(build_model_from_file(TINY), str(tmp_path)).save("good")
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
        EVADCheckpointer(build_model_from_file(TINY)).load(str(path))


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
        EVADCheckpointer(build_model_from_file(TINY)).load(str(path))


def test_zip_with_a_broken_pickle_inside_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "model.pth"
    with zipfile.ZipFile(path, "w") as archive:  # valid CRCs, but no readable checkpoint inside
        archive.writestr("model/data.pkl", b"\x80\x02}q\x00(X")
        archive.writestr("model/version", b"3\n")
        archive.writestr("model/byteorder", b"little")
    with pytest.raises(DamagedCheckpointError, match=f"{path}: damaged checkpoint"):
        EVADCheckpointer(build_model_from_file(TINY)).load(str(path))


@pytest.mark.parametrize("content, message", [(b"", "is empty"), (b"\x80\x04\x95\x10", "not a readable pickle")])
def test_damaged_pickle_is_an_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "weights.pkl"
    path.write_bytes(content)
    with pytest.raises(DamagedCheckpointError, match=f"{path}.*{message}"):
        EVADCheckpointer(build_model_from_file(TINY)).load(str(path))


def test_missing_weights_file_is_file_not_found_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth: checkpoint file not found"):
        EVADCheckpointer(build_model_from_file(TINY)).load(str(tmp_path / "nowhere.pth"))
