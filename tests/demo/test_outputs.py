"""Demo outputs: the container by extension (a real GIF), an annotated re-stream over UDP that
another reader watches, JSON lines readable while they are written; and the filters (label
files, a class subset, an action-score threshold)."""
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from evad_d2.data.formats.label_map import read_label_map
from evad_d2.data.video import VideoWriteError, iter_video_frames
from evad_d2.demo import VideoDemo, build_demo_predictor
from evad_d2.demo.filters import ActionFilter, LabelFileError, read_label_names, resolve_classes
from evad_d2.demo.sources import open_source
from evad_d2.demo.writers import JsonLinesWriter
from evad_d2.testing import REPO_ROOT as REPO
from evad_d2.testing import TINY_CONFIG as TINY
from evad_d2.testing import UdpSender, coded_frame, free_udp_port, tiny_cfg
from evad_d2.testing import write_video as write_coded_video

@pytest.fixture
def short_video(tmp_path):
    path = tmp_path / "short.mp4"
    write_coded_video(path, [coded_frame(i) for i in range(12)], rate=10)
    return path


def test_gif_output_is_a_real_gif(predictor, short_video, tmp_path):
    out = tmp_path / "out.gif"
    VideoDemo(predictor).run(str(short_video), str(out), show_progress=False)
    assert out.read_bytes()[:6] == b"GIF89a"
    frames = list(iter_video_frames(str(out)))
    assert len(frames) == 12 and frames[0].image.shape == (48, 64, 3)
    np.testing.assert_allclose([f.time for f in frames], np.arange(12) / 10, atol=0.011)  # GIF: 1/100 s


def test_webm_output_and_unknown_extension(predictor, short_video, tmp_path):
    out = tmp_path / "out.webm"
    VideoDemo(predictor).run(str(short_video), str(out), show_progress=False)
    assert out.read_bytes()[:4] == b"\x1a\x45\xdf\xa3"  # EBML (Matroska/WebM)
    assert len(list(iter_video_frames(str(out)))) == 12
    with pytest.raises(VideoWriteError, match=r"out\.avi9: unknown output extension"):
        VideoDemo(predictor).run(str(short_video), str(tmp_path / "out.avi9"), show_progress=False)


def test_annotated_restream_over_udp_is_watchable(predictor, short_video):
    """The demo re-streams to udp://127.0.0.1:P as MPEG-TS while a reader (another "player")
    watches it: the reader receives the annotated frames."""
    port = free_udp_port()
    received = {}

    def watch():
        source = open_source(f"udp://127.0.0.1:{port}", open_timeout=8.0, stall_timeout=1.5)
        received["frames"] = [f.image for f in source]
        received["end"] = source.end_reason

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    threading.Event().wait(0.3)  # the reader's socket is bound
    stats = VideoDemo(predictor).run(str(short_video), f"udp://127.0.0.1:{port}", show_progress=False)
    reader.join(10)
    assert not reader.is_alive() and received["end"] == "stalled"
    assert stats["num_frames"] == 12 and 8 <= len(received["frames"]) <= 12
    # Annotated: the tiny model keeps every proposal, so boxes change the received pixels.
    assert max(np.abs(f.astype(int) - coded_frame(0).astype(int)).max() for f in received["frames"]) > 60


def test_json_lines_are_readable_while_written(tmp_path):
    path = tmp_path / "live.jsonl"
    writer = JsonLinesWriter(str(path))
    with open(path) as follower:  # another program following the file
        writer.add({"frame_index": 0, "actors": []})
        assert json.loads(follower.readline())["frame_index"] == 0
        writer.add({"frame_index": 30, "actors": [{"box": [1, 2, 3, 4]}]})
        line = json.loads(follower.readline())
        assert line["frame_index"] == 30 and line["actors"][0]["box"] == [1, 2, 3, 4] and line["written_at"] > 0
    writer.close()
    assert writer.num_records == 2


def _actor(scores):
    return {"box": [0, 0, 1, 1], "person_score": 0.9, "action_scores": scores,
            "actions": [], "action_ids": []}


def test_action_filter_by_threshold_and_classes():
    names, ids = ["stand", "sit", "walk", "run"], [11, 12, 14, 15]
    a, b = _actor([0.9, 0.2, 0.6, 0.4]), _actor([0.1, 0.3, 0.2, 0.25])
    assert ActionFilter(names, ids)([a, b]) == [a, b]  # nothing filtered: unchanged
    shown = ActionFilter(names, ids, top_k=2, score_threshold=0.5)([a, b])
    assert len(shown) == 1  # b has no action >= 0.5
    assert shown[0]["actions"] == [("stand", 0.9), ("walk", 0.6)] and shown[0]["action_ids"] == [11, 14]
    columns = resolve_classes(["RUN", "12"], names, ids)  # a name (any case) and a label-map id
    assert columns == [1, 3]
    shown = ActionFilter(names, ids, top_k=3, classes=columns)([a, b])
    assert [s["action_ids"] for s in shown] == [[15, 12], [12, 15]]
    assert shown[1]["actions"] == [("sit", 0.3), ("run", 0.25)]
    assert shown[0]["action_scores"] == a["action_scores"]  # all scores kept
    assert ActionFilter(names, ids, classes=columns, score_threshold=0.35)([a, b])[0]["actions"] == [("run", 0.4)]
    with pytest.raises(ValueError, match=r"--classes: unknown class 'fly' \(neither an id nor a name; known: "
                                         r"11: stand, 12: sit, 14: walk, 15: run\)$"):
        resolve_classes(["fly"], names, ids)
    with pytest.raises(ValueError, match=r"--score-threshold must be in \[0, 1\]"):
        ActionFilter(names, ids, score_threshold=2)


def test_label_names_from_pbtxt_json_and_text(tmp_path):
    pbtxt = tmp_path / "l.pbtxt"
    pbtxt.write_text('label { name: "walk" label_id: 14 }\nlabel { name: "stand" label_id: 11 }\n')
    assert read_label_names(str(pbtxt)) == ([11, 14], ["stand", "walk"])
    js = tmp_path / "l.json"
    js.write_text(json.dumps(["stand", "walk"]))
    assert read_label_names(str(js)) == (None, ["stand", "walk"])
    js.write_text(json.dumps({"classes": [{"id": 3, "name": "wave"}]}))  # the demo's own JSON
    assert read_label_names(str(js)) == ([3], ["wave"])
    txt = tmp_path / "l.txt"
    txt.write_text("stand\n\n  talk to (e.g., self)  \n")
    assert read_label_names(str(txt)) == (None, ["stand", "talk to (e.g., self)"])
    js.write_text("[1, ")
    with pytest.raises(LabelFileError, match=r"l\.json: line 1: not valid JSON"):
        read_label_names(str(js))
    js.write_text("[1, 2]")
    with pytest.raises(LabelFileError, match="only names"):
        read_label_names(str(js))
    txt.write_text("\n")
    with pytest.raises(LabelFileError, match=r"l\.txt: no class names"):
        read_label_names(str(txt))
    with pytest.raises(LabelFileError, match="nothing.txt: label file not found"):
        read_label_names(str(tmp_path / "nothing.txt"))


def test_label_file_names_the_predictor_classes(tmp_path):
    n = tiny_cfg().MODEL.EVAD.NUM_ACTION_CLASSES
    txt = tmp_path / "names.txt"
    txt.write_text("".join(f"class {i}\n" for i in range(n)))
    predictor = build_demo_predictor(TINY, labelmap=str(txt))
    assert predictor.class_names == [f"class {i}" for i in range(n)]
    txt.write_text("only one\n")
    with pytest.raises(ValueError, match=rf"names.txt: 1 class names but the model has {n} action classes"):
        build_demo_predictor(TINY, labelmap=str(txt))


@pytest.mark.slow
def test_demo_tool_on_a_live_udp_stream(generated, tmp_path):
    """tools/demo.py end to end on a UDP stream: GIF output, JSON lines, label file and filters;
    then an unopenable URL is an exit status 2 naming it."""
    root, _ = generated
    labelmap = root / "annotations" / "ava_action_list_v2.2.pbtxt"
    names = read_label_map(str(labelmap))
    chosen = sorted(names)[:2]
    out, jsonl = tmp_path / "live.gif", tmp_path / "live.jsonl"
    # The tool opens the stream once its model is built: send until its first record appears.
    sender = UdpSender(free_udp_port(), num_frames=20, fps=10, hold=3.0, until=jsonl.exists)
    sender.start()
    cmd = [sys.executable, os.path.join(REPO, "tools", "demo.py"), "--config-file", TINY, "--input", sender.url,
           "--output", str(out), "--jsonl", str(jsonl), "--labels", str(labelmap), "--classes", *map(str, chosen),
           "--score-threshold", "0.0", "--stall-timeout", "1", "--open-timeout", "20", "--no-progress",
           "MODEL.EVAD.LOC.SCORE_THRESH_TEST", "0.0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "stalled" in proc.stdout + proc.stderr  # the warning (detectron2 logs to stdout)
    assert out.read_bytes()[:6] == b"GIF89a" and len(list(iter_video_frames(str(out)))) >= 20
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert records and all(a["actions"] and {x["id"] for x in a["actions"]} <= set(chosen)
                           for r in records for a in r["actors"])
    port = free_udp_port()
    bad = cmd[:cmd.index("--input") + 1] + [f"udp://127.0.0.1:{port}", "--jsonl", str(tmp_path / "x.jsonl"),
                                            "--open-timeout", "0.5", "MODEL.EVAD.LOC.SCORE_THRESH_TEST", "0.0"]
    proc = subprocess.run(bad, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert f"udp://127.0.0.1:{port}: no data within 0.5 s" in proc.stderr


def test_json_and_csv_appear_complete_at_close(tmp_path):
    from evad_d2.demo.writers import AvaCsvWriter, JsonKeyframeWriter

    js, cs = tmp_path / "k.json", tmp_path / "k.csv"
    jw, cw = JsonKeyframeWriter(str(js), {"video_id": "v"}), AvaCsvWriter(str(cs), "v", 10, 10, [1, 2])
    jw.add({"frame_index": 0})
    cw.add(0.0, [{"box": [0, 0, 5, 5], "action_scores": [0.5, 0.25]}])
    assert not js.exists() and not cs.exists()
    jw.close({"num_frames": 1})
    cw.close()
    assert json.loads(js.read_text()) == {"video_id": "v", "keyframes": [{"frame_index": 0}], "num_frames": 1}
    assert cs.read_text().splitlines() == ["v,0000,0.00000,0.00000,0.50000,0.50000,1,0.500000",
                                           "v,0000,0.00000,0.00000,0.50000,0.50000,2,0.250000"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.csv", "k.json"]
    with pytest.raises(FileNotFoundError, match=r"no_dir/x.json: cannot create the output: folder .* does not exist"):
        JsonKeyframeWriter(str(tmp_path / "no_dir" / "x.json"), {})
