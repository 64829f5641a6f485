"""CVAT for video 1.1 exports -> AVA format (evad_d2/data/formats/cvat.py, evad_d2/data/convert_cvat.py)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from evad_d2.data import load_ava_dataset
from evad_d2.data.convert_cvat import CvatSource, convert_cvat, cvat_sources, keyframe_video_frame
from evad_d2.data.formats.cvat import CvatFormatError, box_at, read_cvat_video
from evad_d2.data.formats.label_map import read_label_map
from evad_d2.data.validate import validate_ava_root
from evad_d2.testing import REPO_ROOT as REPO, write_video


# A "CVAT for video 1.1" export as CVAT writes it (task meta, labels with a select attribute,
# tracks of boxes with outside/occluded/keyframe and per-box attributes), 64x48, frames 0..29.
XML = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <task>
      <id>7</id>
      <name>clip</name>
      <size>30</size>
      <mode>interpolation</mode>
      <overlap>5</overlap>
      <bugtracker></bugtracker>
      <created>2024-05-01 10:00:00.000000+00:00</created>
      <updated>2024-05-01 11:00:00.000000+00:00</updated>
      <subset>default</subset>
      <start_frame>0</start_frame>
      <stop_frame>29</stop_frame>
      <frame_filter></frame_filter>
      <segments>
        <segment><id>9</id><start>0</start><stop>29</stop><url>http://localhost:8080/api/jobs/9</url></segment>
      </segments>
      <owner><username>admin</username><email></email></owner>
      <assignee></assignee>
      <labels>
        <label>
          <name>person</name>
          <color>#fa3253</color>
          <type>rectangle</type>
          <attributes>
            <attribute>
              <name>action</name>
              <mutable>True</mutable>
              <input_type>select</input_type>
              <default_value>__undefined__</default_value>
              <values>__undefined__
walk
run</values>
            </attribute>
          </attributes>
        </label>
        <label>
          <name>car</name>
          <color>#33ddff</color>
          <type>rectangle</type>
          <attributes>
          </attributes>
        </label>
      </labels>
      <original_size>
        <width>64</width>
        <height>48</height>
      </original_size>
    </task>
    <dumped>2024-05-01 11:05:00.000000+00:00</dumped>
  </meta>
  <track id="0" label="person" source="manual">
    <box frame="0" keyframe="1" outside="0" occluded="0" xtl="0.00" ytl="0.00" xbr="32.00" ybr="24.00" z_order="0">
      <attribute name="action">walk</attribute>
    </box>
    <box frame="20" keyframe="1" outside="0" occluded="1" xtl="32.00" ytl="24.00" xbr="64.00" ybr="48.00" z_order="0">
      <attribute name="action">run</attribute>
    </box>
    <box frame="21" keyframe="1" outside="1" occluded="0" xtl="32.00" ytl="24.00" xbr="64.00" ybr="48.00" z_order="0">
      <attribute name="action">run</attribute>
    </box>
  </track>
  <track id="1" label="person" source="manual">
    <box frame="5" keyframe="1" outside="0" occluded="0" xtl="-4.00" ytl="12.00" xbr="16.00" ybr="60.00" z_order="0">
      <attribute name="action">run</attribute>
    </box>
    <box frame="10" keyframe="1" outside="0" occluded="0" xtl="0.00" ytl="12.00" xbr="16.00" ybr="48.00" z_order="0">
      <attribute name="action">__undefined__</attribute>
    </box>
    <box frame="15" keyframe="1" outside="1" occluded="0" xtl="0.00" ytl="12.00" xbr="16.00" ybr="48.00" z_order="0">
      <attribute name="action">__undefined__</attribute>
    </box>
  </track>
  <track id="2" label="car" source="manual">
    <box frame="0" keyframe="1" outside="0" occluded="0" xtl="40.00" ytl="0.00" xbr="60.00" ybr="10.00" z_order="0">
    </box>
  </track>
</annotations>
"""


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _csv_rows(path):
    with open(path) as f:
        return [line.rstrip("\n").split(",") for line in f if line.strip()]


def test_reader_parses_meta_tracks_and_interpolates(tmp_path):
    video = read_cvat_video(_write(tmp_path, "clip.xml", XML))
    assert (video.name, video.width, video.height, video.num_frames, video.version) == ("clip", 64, 48, 30, "1.1")
    assert video.labels["person"]["action"] == ("select", ["__undefined__", "walk", "run"])
    t0 = video.tracks[0]
    assert (t0.track_id, t0.label, [b.frame for b in t0.boxes]) == (0, "person", [0, 20, 21])
    # frame 10: half-way between frames 0 and 20, the earlier box's attributes
    b = box_at(t0, 10)
    assert b.box == pytest.approx((16.0, 12.0, 48.0, 36.0)) and b.attributes == {"action": "walk"} and not b.keyframe
    assert box_at(t0, 20).occluded and box_at(t0, 21) is None and box_at(t0, 29) is None  # outside from 21 on
    assert box_at(video.tracks[1], 4) is None  # not started
    assert box_at(video.tracks[2], 29).box == (40.0, 0.0, 60.0, 10.0)  # no outside box: lasts to the end


def test_keyframe_frames_follow_the_30fps_timeline():
    # The frame the loader's 30 fps timeline shows at second s: the last one before s + 1/60 s.
    assert [keyframe_video_frame(s, 30) for s in (0, 1, 2)] == [0, 30, 60]
    assert [keyframe_video_frame(s, 10) for s in (0, 1, 2)] == [0, 10, 20]
    assert keyframe_video_frame(1, 29.97) == 30  # ceil(29.97 * (1 + 1/60)) - 1 = ceil(30.4695) - 1
    assert keyframe_video_frame(1, 25) == 25


def test_convert_writes_rows_label_map_and_frame_lists(tmp_path):
    xml = _write(tmp_path, "clip.xml", XML)
    out = tmp_path / "ava"
    stats = convert_cvat([CvatSource(xml, "clip")], str(out), "train", fps=10, person_labels=["person"], log=lambda *a: None)
    # Keyframes at seconds 0, 1, 2 = frames 0, 10, 20 (10 fps); timestamps 900 + second.
    assert _csv_rows(out / "annotations" / "ava_train_v2.2.csv") == [
        ["clip", "0900", "0.0000", "0.0000", "0.5000", "0.5000", "1", "0"],  # walk
        ["clip", "0901", "0.2500", "0.2500", "0.7500", "0.7500", "1", "0"],  # interpolated, walk
        ["clip", "0902", "0.5000", "0.5000", "1.0000", "1.0000", "2", "0"],  # run
    ]
    # track 1 at frame 10 has no action (__undefined__): left out and counted; at 20 it is outside.
    assert stats["persons_without_action"] == 1 and stats["keyframes"] == 3 and stats["boxes"] == 3
    assert read_label_map(str(out / "annotations" / "ava_action_list_v2.2.pbtxt")) == {1: "walk", 2: "run"}
    lines = (out / "frame_lists" / "train.csv").read_text().splitlines()
    assert lines[0] == "original_vido_id video_idx frame_id path labels" and len(lines) == 1 + 90  # 3 s at 30 fps
    assert lines[1] == 'clip 0 0 clip/clip_000001.jpg ""' and lines[-1] == 'clip 0 89 clip/clip_000090.jpg ""'
    # Without person_labels the car track is read too, and has no action attribute: no row.
    stats = convert_cvat([CvatSource(xml, "clip")], str(tmp_path / "all"), "train", fps=10, log=lambda *a: None)
    assert stats["persons_without_action"] == 1 + 3


def test_converted_root_loads_and_validates_with_its_video(tmp_path):
    video = tmp_path / "raw" / "clip.mp4"
    video.parent.mkdir()
    write_video(video, [np.full((48, 64, 3), 10 * i, np.uint8) for i in range(30)], rate=10)
    xml = _write(tmp_path, "clip.xml", XML)
    (sources,) = [cvat_sources([xml], video_dir=str(video.parent))]
    assert sources == [CvatSource(xml, "clip", str(video))]
    out = tmp_path / "ava"
    convert_cvat(sources, str(out), "train", person_labels=["person"], log=lambda *a: None)  # fps from the video
    assert (out / "videos" / "clip.mp4").read_bytes() == video.read_bytes()
    dicts = load_ava_dataset(str(out), "train")
    assert [(d["timestamp"], d["frame_index"]) for d in dicts] == [(900, 0), (901, 30), (902, 60)]
    np.testing.assert_allclose(dicts[1]["annotations"][0]["bbox"], [16, 12, 48, 36])
    assert validate_ava_root(str(out), out=open(os.devnull, "w")) == []


def test_other_action_sources(tmp_path):
    checkbox = XML.replace(
        "<attributes>\n            <attribute>\n              <name>action</name>",
        "<attributes>\n            <attribute><name>wave</name><mutable>True</mutable><input_type>checkbox</input_type>"
        "<default_value>false</default_value><values>false</values></attribute>\n"
        "            <attribute><name>sit</name><mutable>True</mutable><input_type>checkbox</input_type>"
        "<default_value>false</default_value><values>false</values></attribute>\n"
        "            <attribute>\n              <name>action</name>", 1,
    ).replace('<attribute name="action">walk</attribute>',
              '<attribute name="wave">true</attribute><attribute name="sit">true</attribute><attribute name="action">walk</attribute>')
    out = tmp_path / "cb"
    convert_cvat([CvatSource(_write(tmp_path, "cb.xml", checkbox), "v")], str(out), "train", fps=10,
                 actions="checkboxes", person_labels=["person"], log=lambda *a: None)
    assert read_label_map(str(out / "annotations" / "ava_action_list_v2.2.pbtxt")) == {1: "wave", 2: "sit"}
    rows = _csv_rows(out / "annotations" / "ava_train_v2.2.csv")
    assert [(r[1], r[6]) for r in rows] == [("0900", "1"), ("0900", "2"), ("0901", "1"), ("0901", "2")]  # multi-label
    out = tmp_path / "lb"
    convert_cvat([CvatSource(_write(tmp_path, "lb.xml", XML), "v")], str(out), "train", fps=10, actions="label",
                 keyframe_interval=2, log=lambda *a: None)
    assert read_label_map(str(out / "annotations" / "ava_action_list_v2.2.pbtxt")) == {1: "person", 2: "car"}
    rows = _csv_rows(out / "annotations" / "ava_train_v2.2.csv")
    assert [(r[1], r[6], r[7]) for r in rows] == [("0900", "1", "0"), ("0900", "2", "2"), ("0902", "1", "0"), ("0902", "2", "2")]


def test_second_split_keeps_the_label_map_ids(tmp_path):
    out = tmp_path / "ava"
    (out / "annotations").mkdir(parents=True)
    (out / "annotations" / "ava_action_list_v2.2.pbtxt").write_text(
        'item {\n  name: "run"\n  id: 4\n}\nitem {\n  name: "walk"\n  id: 9\n}\n')
    convert_cvat([CvatSource(_write(tmp_path, "c.xml", XML), "c")], str(out), "val", fps=10,
                 person_labels=["person"], log=lambda *a: None)
    assert [r[6] for r in _csv_rows(out / "annotations" / "ava_val_v2.2.csv")] == ["9", "9", "4"]
    (out / "annotations" / "ava_action_list_v2.2.pbtxt").write_text('item {\n  name: "run"\n  id: 4\n}\n')
    with pytest.raises(CvatFormatError, match=r"classes \['walk'\] are not in the existing label map"):
        convert_cvat([CvatSource(str(tmp_path / "c.xml"), "c")], str(out), "val", fps=10, log=lambda *a: None)


@pytest.mark.parametrize("edit, message", [
    (lambda x: x.replace("<track id", "<image id=\"0\" name=\"a.jpg\"></image><track id", 1), "'CVAT for images' export"),
    (lambda x: x.replace("<width>64</width>", ""), "no <original_size>"),
    (lambda x: x.replace('xtl="32.00" ytl="24.00" xbr="64.00" ybr="48.00" z_order="0">\n      <attribute name="action">run',
                         'xtl="3x" ytl="24.00" xbr="64.00" ybr="48.00" z_order="0">\n      <attribute name="action">run', 1),
     r"xtl='3x' is not a number"),
    (lambda x: x.replace("</annotations>", ""), "not well-formed XML"),
    (lambda x: x.replace("<meta>\n    <task>", "<meta>\n    <project><tasks><task><id>1</id></task>\n    <task>")
     .replace("</task>\n    <dumped>", "</task></tasks></project>\n    <dumped>"), "a project export with several tasks"),
    (lambda x: x.replace(">walk</attribute>", ">jog</attribute>"), r"track 0, frame 0: action 'jog' is not a declared class"),
    (lambda x: x.replace("<name>action</name>", "<name>activity</name>"), "no label declares the action attribute 'action'"),
])
def test_bad_exports_are_errors_naming_the_file(tmp_path, edit, message):
    xml = _write(tmp_path, "bad.xml", edit(XML))
    with pytest.raises(CvatFormatError, match=r"bad\.xml.*" + message):
        convert_cvat([CvatSource(xml, "v")], str(tmp_path / "out"), "train", fps=10, log=lambda *a: None)


def test_bad_arguments(tmp_path):
    xml = _write(tmp_path, "c.xml", XML)
    with pytest.raises(ValueError, match="whole number of seconds"):
        convert_cvat([CvatSource(xml, "v")], str(tmp_path / "o"), "train", fps=10, keyframe_interval=0.5)
    with pytest.raises(ValueError, match="distinct video ids"):
        convert_cvat([CvatSource(xml, "v"), CvatSource(xml, "v")], str(tmp_path / "o"), "train", fps=10)
    with pytest.raises(CvatFormatError, match=r"frame rate \(--fps\)"):
        convert_cvat([CvatSource(xml, "v")], str(tmp_path / "o"), "train", log=lambda *a: None)
    with pytest.raises(ValueError, match="2 XML files but 1 videos"):
        cvat_sources([xml, xml], ["a.mp4"])


@pytest.mark.slow
def test_tool_converts_and_reports_errors(tmp_path):
    xml = _write(tmp_path, "clip.xml", XML)
    tool = os.path.join(REPO, "tools", "convert_cvat.py")
    ok = subprocess.run([sys.executable, tool, xml, "--out", str(tmp_path / "ava"), "--split", "train", "--fps", "10",
                         "--person-label", "person"], capture_output=True, text=True, cwd=REPO)
    assert ok.returncode == 0, ok.stderr
    assert "3 rows, 3 boxes on 3 keyframes of 1 videos (1 persons without an action left out)" in ok.stdout
    bad = subprocess.run([sys.executable, tool, xml, "--out", str(tmp_path / "b"), "--split", "train"],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "clip.xml: without its video, the frame rate (--fps)" in bad.stderr


def test_writer_round_trips_and_the_example_export_converts(tmp_path):
    from evad_d2.data.cvat_example import ACTION_NAMES, write_cvat_example
    from evad_d2.data.formats.cvat import write_cvat_video

    video = read_cvat_video(_write(tmp_path, "clip.xml", XML))
    write_cvat_video(str(tmp_path / "again.xml"), video)
    again = read_cvat_video(str(tmp_path / "again.xml"))
    assert (again.width, again.height, again.num_frames, again.labels) == (64, 48, 30, video.labels)
    assert [(t.track_id, t.label, t.boxes) for t in again.tracks] == [(t.track_id, t.label, t.boxes) for t in video.tracks]

    stats = write_cvat_example(str(tmp_path / "export"), train_videos=1, val_videos=0, log=lambda *a: None)
    assert stats["videos"] == 1
    xml = str(tmp_path / "export" / "train" / "clip00.xml")
    example = read_cvat_video(xml)
    assert example.labels == {"person": {"action": ("select", ACTION_NAMES)}} and example.num_frames == 150
    assert all(len(t.boxes) == 150 for t in example.tracks)  # a box on every frame, as CVAT writes tracks
    out = tmp_path / "ava"
    convert_cvat(cvat_sources([xml], video_dir=str(tmp_path / "export" / "train")), str(out), "train", log=lambda *a: None)
    dicts = load_ava_dataset(str(out), "train")
    assert [d["timestamp"] for d in dicts] == [900, 901, 902, 903, 904]
    assert all(len(d["annotations"]) == len(example.tracks) for d in dicts)
