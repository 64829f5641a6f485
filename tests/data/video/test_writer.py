"""The video writer: container by extension, each frame's time kept, real GIFs, clear errors."""
from fractions import Fraction

import av
import numpy as np
import pytest

from evad_d2.data.video import VideoWriteError, VideoWriter, iter_video_frames, output_format
from evad_d2.data.video import writer as writer_module
from evad_d2.testing import CODED_H as H, CODED_W as W, coded_frame, decode_index

TIMES = [0.0, 0.1, 0.25, 0.3, 0.5, 0.9]  # variable frame rate


def _write(path, fps=10, width=W, height=H):
    w = VideoWriter(str(path), width, height, Fraction(fps))
    for i, t in enumerate(TIMES):
        w.write(coded_frame(i, width, height), t)
    w.close()
    return w


@pytest.mark.parametrize(
    "name, container, codecs",
    [
        ("a.mp4", "mov,mp4,m4a,3gp,3g2,mj2", {"h264", "mpeg4"}),
        ("a.webm", "matroska,webm", {"vp9", "vp8"}),
        ("a.mkv", "matroska,webm", {"h264", "mpeg4"}),
        ("a.ts", "mpegts", {"h264", "mpeg2video"}),
        ("a.gif", "gif", {"gif"}),
    ],
)
def test_container_by_extension_keeps_frames_and_times(tmp_path, name, container, codecs):
    path = tmp_path / name
    _write(path)
    with av.open(str(path)) as c:
        assert c.format.name == container
        assert c.streams.video[0].codec_context.name in codecs
    frames = list(iter_video_frames(str(path)))
    assert [round(f.time, 3) for f in frames] == TIMES
    assert [decode_index(f.image) for f in frames] == list(range(len(TIMES)))


def test_gif_is_a_gif89a_of_the_input_size(tmp_path):
    path = tmp_path / "odd.gif"
    _write(path, width=W + 1, height=H + 1)
    assert path.read_bytes()[:6] == b"GIF89a"
    frames = list(iter_video_frames(str(path)))
    assert frames[0].image.shape == (H + 1, W + 1, 3)  # no padding: a GIF has no chroma subsampling
    # An adaptive palette per frame: the few grey levels of a coded frame come back exactly.
    assert np.abs(frames[2].image.astype(int) - coded_frame(2, W + 1, H + 1)).max() <= 2


def test_yuv_outputs_pad_odd_sizes(tmp_path):
    path = tmp_path / "odd.mp4"
    _write(path, width=W + 1, height=H + 1)
    assert next(iter_video_frames(str(path))).image.shape == (H + 2, W + 2, 3)


def test_formats_by_url_scheme():
    assert output_format("udp://127.0.0.1:5000").container == "mpegts"
    assert output_format("udp://127.0.0.1:5000").live
    assert output_format("rtmp://host/app/key").container == "flv"
    assert not output_format("x.MP4").live


@pytest.mark.parametrize("name, message", [("a.avi2", "unknown output extension '.avi2'"), ("out", "(none)"),
                                           ("gopher://x", "cannot re-stream to gopher://")])
def test_unknown_outputs_are_refused_naming_them(tmp_path, name, message):
    with pytest.raises(VideoWriteError, match="use one of|known:") as e:
        VideoWriter(str(tmp_path / name) if "://" not in name else name, W, H, Fraction(10))
    assert message in str(e.value)


def test_missing_encoder_is_a_clear_error(tmp_path, monkeypatch):
    fmt = writer_module.OutputFormat("webm", ("no-such-vp9", "no-such-vp8"))
    with pytest.raises(VideoWriteError, match=r"a\.webm: this PyAV/FFmpeg build has no encoder for webm "
                                              r"\(tried no-such-vp9, no-such-vp8\)"):
        VideoWriter(str(tmp_path / "a.webm"), W, H, Fraction(10), fmt=fmt)


def test_unwritable_path_names_it(tmp_path):
    with pytest.raises(VideoWriteError, match="no_dir/a.mp4: cannot create the output video"):
        VideoWriter(str(tmp_path / "no_dir" / "a.mp4"), W, H, Fraction(10))


def test_a_file_appears_complete_at_close(tmp_path):
    path = tmp_path / "a.ts"
    w = VideoWriter(str(path), W, H, Fraction(10))
    for i in range(5):
        w.write(coded_frame(i), i / 10)
    assert not path.exists()  # written under a hidden temporary name
    w.close()
    assert [p.name for p in tmp_path.iterdir()] == ["a.ts"]
    assert len(list(iter_video_frames(str(path)))) == 5
