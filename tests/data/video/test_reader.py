"""Video decoding (timed by presentation timestamps, variable frame rates, rotation), frame folders, and their errors."""

import av
import numpy as np
import pytest
from PIL import Image

from evad_d2.data.video import (
    VideoReadError,
    clip_frame_indices,
    count_frames_in_folder,
    iter_video_frames,
    keyframe_frame_index,
    probe_video,
    read_frame_folder,
    read_video_frames,
    scan_video,
    timeline_frame_count,
)
from evad_d2.testing import VFR_MS, CODED_H as H, CODED_W as W, coded_frame, decode_index, write_video


def test_video_decoding_returns_the_requested_frames(coded_video):
    info = probe_video(coded_video)
    assert (info.num_frames, info.height, info.width, info.fps) == (180, H, W, 30)
    for ts in (900, 902, 905):
        idx = clip_frame_indices(keyframe_frame_index(ts), 16, 4, 8, 180)
        frames = read_video_frames(coded_video, idx)
        assert frames.shape == (16, H, W, 3) and frames.dtype == np.uint8
        assert [decode_index(f) for f in frames] == idx
    # Arbitrary order and repeats.
    assert [decode_index(f) for f in read_video_frames(coded_video, [150, 3, 3, 179])] == [150, 3, 3, 179]


def test_video_at_another_frame_rate_is_sampled_by_time(tmp_path):
    path = tmp_path / "v15.mp4"
    write_video(path, [coded_frame(i) for i in range(45)], rate=15)  # 3 s at 15 fps
    # Timeline index i (30 fps) shows the latest frame before (i + 1/2)/30 s, as `ffmpeg -r 30`
    # extracts: an odd i repeats frame (i - 1)/2.
    frames = read_video_frames(str(path), [0, 1, 2, 30, 31, 88, 89], frame_rate=30)
    assert [decode_index(f) for f in frames] == [0, 0, 1, 15, 15, 44, 44]
    info = probe_video(str(path))
    assert (info.num_frames, info.fps, info.duration, timeline_frame_count(info, 30)) == (45, 15, 3, 90)


def test_video_and_frame_folder_give_the_same_frames(coded_video, tmp_path):
    # Frames extracted the way the AVA tooling does it: decode the video, save JPEGs.
    frame_dir = tmp_path / "vid"
    frame_dir.mkdir()
    reference = [f.to_ndarray(format="rgb24") for f in av.open(coded_video).decode(video=0)]
    for i, img in enumerate(reference, start=1):
        Image.fromarray(img).save(frame_dir / f"vid_{i:06d}.jpg", quality=98, subsampling=0)
    assert count_frames_in_folder(str(frame_dir), "vid_{:06d}.jpg") == 180
    idx = clip_frame_indices(keyframe_frame_index(903), 16, 4, 8, 180) + [0, 179]
    from_video = read_video_frames(coded_video, idx).astype(np.int16)
    from_frames = read_frame_folder(str(frame_dir), "vid_{:06d}.jpg", idx).astype(np.int16)
    np.testing.assert_array_equal(from_video, np.stack([reference[i] for i in idx]))
    # JPEG at quality 98 without chroma subsampling changes pixels by a few levels on average;
    # the neighbouring frame (bar moved by 3 px) differs by far more, so a 1-frame offset fails.
    err = np.abs(from_video - from_frames).mean(axis=(1, 2, 3))
    assert err.max() < 1.5
    shifted = np.abs(from_video[1:-2] - from_frames[:-3]).mean(axis=(1, 2, 3))
    assert shifted.min() > 5 * err.max()


def test_bad_videos_and_frames_raise_naming_the_file(coded_video, tmp_path):
    with pytest.raises(VideoReadError, match=r"missing\.mp4: video file not found"):
        read_video_frames(str(tmp_path / "missing.mp4"), [0])
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"not a video file " * 256)  # fixed bytes: random ones may parse as some format
    with pytest.raises(VideoReadError, match=r"corrupt\.mp4: cannot open video"):
        probe_video(str(corrupt))
    # Truncating a normal mp4 loses its index (written at the end): it no longer opens.
    data = open(coded_video, "rb").read()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoReadError, match=r"cut\.mp4: cannot open video"):
        read_video_frames(str(cut), [0])
    # With the index first (faststart), the header still promises every frame but the data stops.
    fast = tmp_path / "fast.mp4"
    write_video(fast, [coded_frame(i) for i in range(180)], faststart=True)
    data = open(fast, "rb").read()
    fast.write_bytes(data[: len(data) // 2])
    assert probe_video(str(fast)).num_frames == 180
    assert decode_index(read_video_frames(str(fast), [5])[0]) == 5
    with pytest.raises(VideoReadError, match=r"fast\.mp4: .*(do not decode|no frames decode|decoding failed)"):
        read_video_frames(str(fast), [170, 175])
    # Frame folders: a missing frame and an unreadable one.
    frame_dir = tmp_path / "frames"
    frame_dir.mkdir()
    for i in (1, 2, 4):
        Image.fromarray(coded_frame(i)).save(frame_dir / f"{i:05d}.jpg")
    with pytest.raises(VideoReadError, match=r"00003\.jpg: frame 3 not found"):
        read_frame_folder(str(frame_dir), "{:05d}.jpg", [0, 1, 2])
    with pytest.raises(VideoReadError, match=r"00003\.jpg: frame 3 is missing"):
        count_frames_in_folder(str(frame_dir), "{:05d}.jpg")
    (frame_dir / "00003.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(VideoReadError, match=r"00003\.jpg: cannot read frame image"):
        read_frame_folder(str(frame_dir), "{:05d}.jpg", [2])


def test_variable_frame_rate_video_is_read_by_time(vfr_video):
    # Timeline index i (30 fps) is the latest frame before (i + 1/2)/30 s (FFmpeg's fps filter),
    # worked out by hand from VFR_MS: 1 -> before 50 ms: 30 (50 itself is not before); 3 -> before
    # 116.7: 50 (120 is after); 9 -> before 316.7: 310; 10 -> before 350: 320; 23 -> before 783.3:
    # 500 (the gap); 30 -> before 1016.7: 1000; 34 -> before 1150: 1100; 90 -> 3000, the last frame.
    wanted = {0: 0, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 9: 6, 10: 7, 12: 8, 15: 11, 22: 11, 23: 11, 30: 12, 31: 13,
              34: 14, 60: 23, 90: 33}
    frames = read_video_frames(vfr_video, list(wanted))
    assert [decode_index(f) for f in frames] == list(wanted.values())
    # The header: 34 frames ending at 3 s + one nominal interval (1/30 s) -> 91 timeline frames.
    info = probe_video(vfr_video)
    assert info.num_frames == 34 and timeline_frame_count(info, 30) == 91
    # The demo's path: the same decoder gives every frame with its own time.
    demo = list(iter_video_frames(vfr_video))
    assert [round(f.time * 1000) for f in demo] == VFR_MS
    assert [decode_index(f.image) for f in demo] == list(range(len(VFR_MS)))
    np.testing.assert_array_equal(frames[-1], demo[-1].image)
    # The validator's full decode agrees that the video is whole.
    scan = scan_video(vfr_video)
    assert scan.num_frames == 34 and abs(scan.last_time - 3.0) < 1e-9


def test_truncated_video_fails_the_same_way_in_validation_and_training(tmp_path):
    fast = tmp_path / "fast.mp4"
    write_video(fast, [coded_frame(i) for i in range(180)], faststart=True)
    data = open(fast, "rb").read()
    fast.write_bytes(data[: len(data) // 2])
    assert timeline_frame_count(probe_video(str(fast)), 30) == 180  # the header still promises 6 s
    # Both stop where the data does (here a packet cut in half), naming the file.
    with pytest.raises(VideoReadError, match=r"fast\.mp4: (decoding failed after 6\d frames|.*truncated)"):
        scan_video(str(fast))
    with pytest.raises(VideoReadError, match=r"fast\.mp4: (decoding failed after|.*5\.833 s.*truncated or corrupt video)"):
        read_video_frames(str(fast), [175])
    assert decode_index(read_video_frames(str(fast), [40])[0]) == 40


def orientation_frame():
    """Asymmetric markers: red top-left, green bottom-right, blue along the top right."""
    img = np.full((H, W, 3), 40, np.uint8)
    img[:12, :16] = (250, 30, 30)
    img[-12:, -8:] = (30, 250, 30)
    img[:6, -20:] = (30, 30, 250)
    return img


def stored_frame(path, index):
    """Frame ``index`` of ``path`` as stored, decoded by PyAV without applying any rotation."""
    with av.open(str(path)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i == index:
                return frame.to_ndarray(format="rgb24")


@pytest.mark.parametrize(
    "ccw, hflip, vflip, clockwise, mirrored",
    [(-90, False, False, 90, False),  # a phone held upright: "rotate 90" (clockwise) in the old tag
     (90, False, False, 270, False), (180, False, False, 180, False), (0, True, False, 0, True),
     (0, False, True, 180, True), (90, True, False, 270, True), (90, False, True, 90, True)],
)
def test_rotation_metadata_is_applied(tmp_path, ccw, hflip, vflip, clockwise, mirrored):
    path = tmp_path / "rotated.mp4"
    write_video(path, [orientation_frame()] * 6, rotation=ccw, hflip=hflip, vflip=vflip)
    # The display matrix means: turn the stored frame `ccw` degrees counter-clockwise, then mirror.
    expected = np.rot90(stored_frame(path, 3), ccw // 90)
    expected = expected[:, ::-1] if hflip else expected
    expected = expected[::-1] if vflip else expected
    info = probe_video(str(path))
    assert (info.height, info.width, info.rotation, info.mirrored) == (*expected.shape[:2], clockwise, mirrored)
    np.testing.assert_array_equal(read_video_frames(str(path), [3])[0], expected)  # training
    np.testing.assert_array_equal(list(iter_video_frames(str(path)))[3].image, expected)  # demo
    scan_video(str(path))  # validation


def test_old_rotate_tag_is_applied(tmp_path):
    path = tmp_path / "tagged.mkv"
    write_video(path, [orientation_frame()] * 6, container_format="matroska", tags={"rotate": "90"})
    assert probe_video(str(path)).rotation == 90
    # "rotate: 90" is clockwise: the red top-left marker ends at the top right.
    got = read_video_frames(str(path), [3])[0]
    np.testing.assert_array_equal(got, np.rot90(stored_frame(path, 3), -1))
    assert got[2, -2, 0] > 200 and got[2, 2, 0] < 100


def ffmpeg_fps_filter(path, rate=30):
    """Coded index of each frame that FFmpeg's fps filter outputs (what `ffmpeg -r 30` extracts)."""
    out = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        graph = av.filter.Graph()
        src, fps, sink = graph.add_buffer(template=stream), graph.add("fps", f"fps={rate}"), graph.add("buffersink")
        src.link_to(fps)
        fps.link_to(sink)
        graph.configure()
        for frame in list(c.decode(stream)) + [None]:
            graph.push(frame)
            while True:
                try:
                    out.append(decode_index(graph.pull().to_ndarray(format="rgb24")))
                except (av.error.BlockingIOError, av.error.EOFError):
                    break
    return out


@pytest.mark.parametrize("rate, times_ms", [(24, None), (25, None), (30, VFR_MS)])
def test_video_frames_are_the_frames_ffmpeg_extracts_at_30_fps(tmp_path, rate, times_ms):
    path = tmp_path / "v.mp4"
    n = len(times_ms) if times_ms else 60
    write_video(path, [coded_frame(i) for i in range(n)], rate=rate, times_ms=times_ms)
    extracted = ffmpeg_fps_filter(path)
    assert timeline_frame_count(probe_video(str(path)), 30) == len(extracted)
    ours = read_video_frames(str(path), list(range(len(extracted))))
    assert [decode_index(f) for f in ours] == extracted


def test_reading_leaves_no_decoded_frame_to_the_garbage_collector(tmp_path):
    """A decoded frame kept alive by a reference cycle (PyAV's cached frame.side_data) is freed by a
    later garbage collection, possibly in a forked data-loader worker, which then hung."""
    import gc

    path = tmp_path / "phone.mp4"
    write_video(path, [orientation_frame()] * 12, rotation=90, hflip=True)
    gc.collect()
    probe_video(str(path))
    read_video_frames(str(path), [3, 9])
    scan_video(str(path))
    list(iter_video_frames(str(path)))
    assert [o for o in gc.get_objects() if type(o) is av.VideoFrame] == []
