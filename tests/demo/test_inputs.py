"""Demo inputs: a live MPEG-TS stream over UDP on 127.0.0.1, a stalled stream, an unopenable URL
or device, a folder of videos, a frame folder (all loopback, bounded in time)."""
import json

import numpy as np
import pytest
from PIL import Image

from evad_d2.data.video import iter_video_frames
from evad_d2.demo import VideoDemo
from evad_d2.demo.filters import ActionFilter
from evad_d2.demo.runner import DemoOutputs, SourceOptions, check_inputs, output_paths, run_demo
from evad_d2.demo.sources import FrameSource, SourceError, expand_inputs, input_kind, open_source
from evad_d2.testing import UdpSender, coded_frame, decode_index, free_udp_port, serve_folder, write_hls, write_video


def _hide_all(predictor):
    """A filter that shows no actor: the output frames stay as decoded (their codes readable)."""
    return ActionFilter(predictor.class_names, predictor.action_ids, classes=[])


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_live_udp_stream_is_read_until_it_stalls(predictor, tmp_path):
    """A sender thread streams 2.5 s at 10 fps and then goes silent: the demo reads the stream,
    detects the stall after 1 s, and leaves an annotated video and JSON lines that decode."""
    sender = UdpSender(free_udp_port(), num_frames=25, fps=10, hold=3.0)
    sender.start()
    source = open_source(sender.url, open_timeout=5.0, stall_timeout=1.0)
    assert source.live and source.frame_rate == 10 and source.name.startswith("udp_127.0.0.1_")
    out, jsonl, js = tmp_path / "live.mp4", tmp_path / "live.jsonl", tmp_path / "live.json"
    stats = VideoDemo(predictor).run(source, str(out), jsonl_path=str(jsonl), json_path=str(js), show_progress=False)
    sender.join(5)
    assert sender.error is None and sender.sent == 25
    assert stats["end_reason"] == "stalled"
    # Loopback UDP: every frame arrives (the first ones may be lost before the first keyframe).
    n = stats["num_frames"]
    assert 20 <= n <= 25
    frames = list(iter_video_frames(str(out)))
    assert len(frames) == n
    np.testing.assert_allclose([f.time for f in frames], np.arange(n) / 10, atol=2e-3)
    records = _jsonl(jsonl)
    # One keyframe per second (stride 10 at 10 fps): frames 0, 10, 20 of what was received.
    assert [r["frame_index"] for r in records] == list(range(0, n, 10))
    for r in records:
        assert r["video_id"] == source.name and r["time"] == pytest.approx(r["frame_index"] / 10, abs=2e-3)
        assert r["actors"] and all(len(a["box"]) == 4 for a in r["actors"])
        assert r["written_at"] > 0
    record = json.loads(js.read_text())  # the JSON is closed (valid) although the stream never ended
    assert record["video"] == sender.url and record["num_frames"] == n
    assert [k["frame_index"] for k in record["keyframes"]] == [r["frame_index"] for r in records]


def test_stream_frames_arrive_in_order_with_their_pixels(predictor, tmp_path):
    sender = UdpSender(free_udp_port(), num_frames=15, fps=10, hold=2.0)
    sender.start()
    source = open_source(sender.url, open_timeout=5.0, stall_timeout=0.8)
    out = tmp_path / "plain.mp4"
    stats = VideoDemo(predictor).run(source, str(out), action_filter=_hide_all(predictor), show_progress=False)
    sender.join(5)
    codes = [decode_index(f.image) for f in iter_video_frames(str(out))]
    assert codes == list(range(15 - stats["num_frames"], 15))


def test_unopenable_url_and_device_name_themselves_and_the_reason(tmp_path):
    port = free_udp_port()
    with pytest.raises(SourceError, match=rf"udp://127.0.0.1:{port}: no data within 0.5 s \(FFmpeg: "):
        open_source(f"udp://127.0.0.1:{port}", open_timeout=0.5)
    with pytest.raises(SourceError, match=r"rtsp://127.0.0.1:1/cam: cannot open: Connection refused"):
        open_source("rtsp://127.0.0.1:1/cam", open_timeout=2.0)
    with pytest.raises(SourceError, match=r"/dev/video97: camera device not found"):
        open_source("/dev/video97")
    with pytest.raises(SourceError, match="missing.mp4: input video not found"):
        open_source(str(tmp_path / "missing.mp4"))


def test_the_demo_reports_an_unopenable_stream(predictor, tmp_path):
    port = free_udp_port()
    demo = VideoDemo(predictor)
    with pytest.raises(SourceError, match=rf"udp://127.0.0.1:{port}: no data within 0.3 s"):
        run_demo(demo, f"udp://127.0.0.1:{port}", DemoOutputs(jsonl=str(tmp_path / "x.jsonl")),
                 sources=SourceOptions(open_timeout=0.3), show_progress=False)
    assert not (tmp_path / "x.jsonl").exists()


def test_input_kinds(tmp_path):
    for spec in ("rtsp://cam/1", "rtmp://h/app", "udp://127.0.0.1:5000", "tcp://h:1", "https://h/live.m3u8",
                 "srt://h:9000", str(tmp_path / "local.m3u8")):
        assert input_kind(spec) == "stream", spec
    assert input_kind("/dev/video0") == "device"
    assert input_kind(str(tmp_path / "a.mp4")) == "file"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="folder has no videos"):
        input_kind(str(empty))
    (empty / "a.mp4").write_bytes(b"")
    (empty / "b.png").write_bytes(b"")
    with pytest.raises(SourceError, match=r"both videos \(1\) and images \(1\)"):
        input_kind(str(empty))


def test_folder_of_videos_gives_one_output_per_video(predictor, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    lengths = {"clip10": 8, "clip2": 12}
    for name, n in lengths.items():
        write_video(folder / f"{name}.mp4", [coded_frame(i) for i in range(n)], rate=10)
    (folder / "notes.txt").write_text("not a video")
    assert expand_inputs(str(folder)) == [str(folder / "clip2.mp4"), str(folder / "clip10.mp4")]  # by number
    out = tmp_path / "out"
    outputs = DemoOutputs(output=str(out / "{name}.gif"), jsonl=str(out / "records"))
    results = run_demo(VideoDemo(predictor), str(folder), outputs, show_progress=False)
    assert [r["input"] for r in results] == expand_inputs(str(folder))
    for name, n in lengths.items():
        gif = out / f"{name}.gif"
        assert gif.read_bytes()[:6] == b"GIF89a"
        assert len(list(iter_video_frames(str(gif)))) == n
        records = _jsonl(out / "records" / f"{name}.jsonl")
        assert [r["frame_index"] for r in records] == list(range(0, n, 10))
        assert {r["video_id"] for r in records} == {name}
    with pytest.raises(ValueError, match="--video-id names one video"):
        run_demo(VideoDemo(predictor), str(folder), outputs, video_id="x", show_progress=False)


def test_output_paths_for_one_and_several_inputs(tmp_path):
    outputs = DemoOutputs(output=str(tmp_path / "v" / "{name}.webm"), json=str(tmp_path / "j"), csv=None)
    assert output_paths(outputs, "a", several=False) is outputs
    each = output_paths(outputs, "a", several=True)
    assert each == DemoOutputs(str(tmp_path / "v" / "a.webm"), str(tmp_path / "j" / "a.json"), None, None)
    assert (tmp_path / "j").is_dir()


def test_frame_folder_is_read_in_name_order_at_the_given_rate(predictor, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(14):  # frame_1.png ... frame_14.png: sorted as numbers, not as text
        Image.fromarray(coded_frame(i)).save(frames / f"frame_{i + 1}.png")
    with pytest.raises(SourceError, match="a frame folder has no frame rate: pass --fps"):
        check_inputs(str(frames))
    assert check_inputs(str(frames), fps=7) == "frames"
    source = open_source(str(frames), fps=7)
    assert (source.name, source.frame_rate, source.expected_frames, source.live) == ("frames", 7, 14, False)
    out, jsonl = tmp_path / "f.mp4", tmp_path / "f.jsonl"
    stats = VideoDemo(predictor).run(source, str(out), jsonl_path=str(jsonl), action_filter=_hide_all(predictor),
                                     show_progress=False)
    assert stats["num_frames"] == 14 and stats["end_reason"] == "end"
    decoded = list(iter_video_frames(str(out)))
    assert [decode_index(f.image) for f in decoded] == list(range(14))
    np.testing.assert_allclose([f.time for f in decoded], np.arange(14) / 7, atol=1e-3)
    assert [r["frame_index"] for r in _jsonl(jsonl)] == [0, 7]  # one keyframe per second at 7 fps
    assert all(r["actors"] == [] for r in _jsonl(jsonl))  # the filter hid every actor


def test_frame_folder_with_a_bad_frame_names_it(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    Image.fromarray(coded_frame(0)).save(frames / "000001.jpg")
    Image.fromarray(coded_frame(1, 32, 32)).save(frames / "000002.jpg")
    (frames / "000003.jpg").write_bytes(b"broken")
    source = open_source(str(frames), fps=5)
    with pytest.raises(SourceError, match=r"000002.jpg: frame size 32x32 differs from the first frame's 64x48"):
        list(source)
    (frames / "000002.jpg").unlink()
    with pytest.raises(SourceError, match=r"000003.jpg: cannot read frame image"):
        list(open_source(str(frames), fps=5))


class _InterruptedSource(FrameSource):
    """Frames 0..n-1 at 10 fps, then Ctrl-C (a KeyboardInterrupt from the decoder)."""

    def __init__(self, n):
        super().__init__("interrupted", "interrupted", 10, True)
        self.n = n

    def _decode(self):
        for i in range(self.n):
            yield coded_frame(i), i / 10
        raise KeyboardInterrupt


# Keyframes at 0 and 1 s; a clip reaches (8 - 1 - 4) * 2 / 30 s = 0.2 s past its keyframe: 2 frames
# complete none, 17 frames both.
@pytest.mark.parametrize("n, keyframes", [(2, 0), (17, 2)])
def test_interrupted_run_leaves_every_decoded_frame_in_valid_outputs(predictor, tmp_path, n, keyframes):
    out, js, jsonl = tmp_path / "i.mp4", tmp_path / "i.json", tmp_path / "i.jsonl"
    with pytest.raises(KeyboardInterrupt):
        VideoDemo(predictor).run(_InterruptedSource(n), str(out), json_path=str(js), jsonl_path=str(jsonl),
                                 show_progress=False)
    assert len(list(iter_video_frames(str(out)))) == n
    record = json.loads(js.read_text())
    assert record["num_frames"] == n and len(record["keyframes"]) == len(_jsonl(jsonl)) == keyframes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.json", "i.jsonl", "i.mp4"]  # no temporaries left


def test_predict_video_over_a_folder_and_a_frame_folder(predictor, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    for name, n in (("b", 12), ("a", 8)):
        write_video(folder / f"{name}.mp4", [coded_frame(i) for i in range(n)], rate=10)
    results = list(VideoDemo(predictor).predict_video(str(folder)))
    assert [(r["video"], r["frame_index"]) for r in results] == [("a", 0), ("b", 0), ("b", 10)]
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(12):
        Image.fromarray(coded_frame(i)).save(frames / f"{i:03d}.png")
    by_frames = list(VideoDemo(predictor).predict_video(open_source(str(frames), fps=10)))
    assert [(r["video"], r["frame_index"]) for r in by_frames] == [("frames", 0), ("frames", 10)]
    # Same pixels (PNG is lossless, the mp4 nearly so) give nearly the same boxes.
    np.testing.assert_allclose([a["box"] for a in by_frames[1]["actors"]], [a["box"] for a in results[2]["actors"]],
                               atol=2.0)


def test_hls_over_http_is_read_to_its_end(predictor, tmp_path):
    """An HLS playlist served on 127.0.0.1: read through FFmpeg's HLS demuxer until it ends."""
    hls = tmp_path / "hls"
    hls.mkdir()
    write_hls(hls, num_frames=25, fps=10)
    with serve_folder(hls) as base:
        url = f"{base}/live.m3u8"
        assert input_kind(url) == "stream"
        source = open_source(url, open_timeout=5.0, stall_timeout=2.0)
        out, jsonl = tmp_path / "hls.mp4", tmp_path / "hls.jsonl"
        stats = VideoDemo(predictor).run(source, str(out), jsonl_path=str(jsonl), action_filter=_hide_all(predictor),
                                         show_progress=False)
        with pytest.raises(SourceError, match=r"/missing.m3u8: cannot open: "):
            open_source(f"{base}/missing.m3u8", open_timeout=2.0)
    assert stats["end_reason"] == "end" and stats["num_frames"] == 25
    assert [decode_index(f.image) for f in iter_video_frames(str(out))] == list(range(25))
    assert [r["frame_index"] for r in _jsonl(jsonl)] == [0, 10, 20]


def test_tcp_stream_ends_when_the_sender_closes(predictor, tmp_path):
    """The demo listens on tcp://127.0.0.1:P (a camera pushing to it); the sender connects, sends
    1.5 s and closes: the stream ends, nothing lost."""
    sender = UdpSender(free_udp_port(), num_frames=15, fps=10, delay=0.0, scheme="tcp")
    sender.start()
    source = open_source(sender.url, open_timeout=5.0, stall_timeout=2.0)
    jsonl = tmp_path / "tcp.jsonl"
    stats = VideoDemo(predictor).run(source, None, jsonl_path=str(jsonl), show_progress=False)
    sender.join(5)
    assert sender.error is None
    assert stats["end_reason"] == "end" and stats["num_frames"] == 15  # TCP: nothing lost
    assert [r["frame_index"] for r in _jsonl(jsonl)] == [0, 10]
