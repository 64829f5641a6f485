"""Video fixtures of the data tests (tests/data/ and tests/data/video/)."""

import pytest

from evad_d2.testing import VFR_MS, coded_frame, write_video


@pytest.fixture(scope="module")
def coded_video(tmp_path_factory):
    d = tmp_path_factory.mktemp("coded")
    path = d / "vid.mp4"
    write_video(path, [coded_frame(i) for i in range(180)])  # 6 s: timestamps 900..905
    return str(path)


@pytest.fixture(scope="module")
def vfr_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("vfr") / "vfr.mp4"
    write_video(path, [coded_frame(i) for i in range(len(VFR_MS))], times_ms=VFR_MS)
    return str(path)
