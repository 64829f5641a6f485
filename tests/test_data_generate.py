"""The bundled generated dataset and the validation command."""
import csv
import hashlib
import importlib.util
import io
import os
import subprocess
import sys

import numpy as np
import pytest

from evad_d2.data import ClipDatasetMapper, load_ava_dataset
from evad_d2.data.ava_format import read_label_map
from evad_d2.data.validate import main as validate_main
from evad_d2.data.validate import validate_ava_root

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "datasets", "generate_ava_like.py")


def _generator():
    spec = importlib.util.spec_from_file_location("generate_ava_like", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _digest(root):
    h = hashlib.sha256()
    for sub in ("annotations", "videos", "frame_lists"):
        for name in sorted(os.listdir(os.path.join(root, sub))):
            h.update(name.encode())
            h.update(open(os.path.join(root, sub, name), "rb").read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("gen") / "ava_like")
    # The command line the quick-start and the checks use.
    subprocess.run(
        [sys.executable, SCRIPT, "--out", root, "--seed", "3", "--num-train-videos", "4", "--num-val-videos", "2",
         "--duration", "6", "--extract-frames", "--quiet"],
        check=True, capture_output=True,
    )
    return root


def test_layout_and_determinism(generated, tmp_path):
    ann = os.path.join(generated, "annotations")
    for name in ("ava_train_v2.2.csv", "ava_val_v2.2.csv", "ava_action_list_v2.2.pbtxt",
                 "ava_action_list_v2.2_for_activitynet_2019.pbtxt", "ava_val_excluded_timestamps_v2.2.csv",
                 "ava_train_excluded_timestamps_v2.2.csv"):
        assert os.path.isfile(os.path.join(ann, name)), name
    assert sorted(os.listdir(os.path.join(generated, "videos"))) == sorted(
        [f"train_003_{i:04d}.mp4" for i in range(4)] + [f"val_003_{i:04d}.mp4" for i in range(2)]
    )
    assert len(os.listdir(os.path.join(generated, "frames", "val_003_0001"))) == 180
    with open(os.path.join(generated, "frame_lists", "val.csv")) as f:
        lines = f.read().splitlines()
    assert lines[0] == "original_vido_id video_idx frame_id path labels"
    assert lines[1] == 'val_003_0000 4 0 val_003_0000/val_003_0000_000001.jpg ""'
    assert len(lines) == 1 + 2 * 180
    assert read_label_map(os.path.join(ann, "ava_action_list_v2.2.pbtxt")) == {
        1: "walk_left", 2: "walk_right", 3: "jump", 4: "wave", 5: "spin", 6: "stand"}
    # Same seed, same bytes.
    again = str(tmp_path / "again")
    _generator().generate(again, 3, 4, 2, 6, 160, 120, False, log=lambda *a: None)
    assert _digest(again) == _digest(generated)


def test_generated_labels_match_the_motion(tmp_path):
    root = str(tmp_path / "g")
    _generator().generate(root, 0, 12, 0, 6, 160, 120, False, log=lambda *a: None)
    dicts = load_ava_dataset(root, "train", "2.2", "video")
    tracks = {}
    for d in dicts:
        assert d["timestamp"] in range(902, 905) and d["frame_index"] == (d["timestamp"] - 900) * 30
        assert 1 <= len(d["annotations"]) <= 3
        for a in d["annotations"]:
            tracks.setdefault((d["video_id"], a["person_id"]), []).append((d["timestamp"], a))
    seen = set()
    for track in tracks.values():
        actions = {tuple(a["action_ids"]) for _, a in track}
        assert len(actions) == 1, "an actor keeps its actions within a video"
        ids = actions.pop()
        seen.update(ids)
        xs = [(a["bbox"][0] + a["bbox"][2]) / 2 for _, a in sorted(track, key=lambda t: t[0])]
        steps = np.diff(xs)
        if 1 in ids:  # walk_left: 10-15 px per second to the left
            assert np.all(steps < -5)
        elif 2 in ids:
            assert np.all(steps > 5)
        elif ids == (6,):  # stand without waving: the box does not move at all
            assert np.all(np.abs(steps) < 0.5)
        if 4 in ids:
            assert ids[0] in (1, 2, 6), "wave only comes with stand/walk"
    assert {1, 2, 3, 5, 6} <= seen


def test_generated_dataset_decodes_the_same_from_video_and_frames(generated):
    videos = load_ava_dataset(generated, "val", "2.2", "video")
    frames = load_ava_dataset(generated, "val", "2.2", "frames")
    assert [(d["video_id"], d["timestamp"]) for d in videos] == [(d["video_id"], d["timestamp"]) for d in frames]
    # 2 val exclusions ("a couple of real exclusions"): timestamps that exist but are not annotated.
    with open(os.path.join(generated, "annotations", "ava_val_excluded_timestamps_v2.2.csv")) as f:
        excluded = {(r[0], int(r[1])) for r in csv.reader(f)}
    assert len(excluded) == 2 and not excluded & {(d["video_id"], d["timestamp"]) for d in videos}
    mapper = ClipDatasetMapper(False, augmentations=[], num_frames=8, sampling_rate=4)
    for dv, df in zip(videos[:3], frames[:3]):
        a, b = mapper(dv)["clip"], mapper(df)["clip"]
        assert a.shape == b.shape == (3, 8, 120, 160)
        # The frames are JPEGs (quality 95) of the decoded video: a few levels of error on average.
        assert (a - b).abs().mean() < 4.0


def test_validate_command_accepts_good_and_rejects_bad_data(generated, tmp_path):
    run = [sys.executable, "-m", "evad_d2.data.validate", "--dataset-root"]
    ok = subprocess.run(run + [generated], capture_output=True, text=True, cwd=REPO)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert validate_ava_root(generated, "frames", out=io.StringIO()) == []

    # Break a copy in several ways; every problem must be reported (in-process to save time).
    import shutil

    bad = str(tmp_path / "bad")
    shutil.copytree(generated, bad, ignore=shutil.ignore_patterns("frames"))
    train_csv = os.path.join(bad, "annotations", "ava_train_v2.2.csv")
    with open(train_csv) as f:
        n = len(f.read().splitlines())
    with open(train_csv, "a") as f:
        f.write("train_003_0000,0902,0.1,0.2,0.3\n")  # line n+1: wrong column count
        f.write("train_003_0000,0902,0.1,0.2,0.3,1.7,1,0\n")  # line n+2: box outside [0, 1]
        f.write("train_003_0000,0902,0.1,0.2,0.3,0.4,42,0\n")  # line n+3: unknown class
        f.write("train_003_0000,0990,0.1,0.2,0.3,0.4,1,0\n")  # line n+4: timestamp past the video
    os.remove(os.path.join(bad, "videos", "val_003_0001.mp4"))
    with open(os.path.join(bad, "videos", "train_003_0002.mp4"), "r+b") as f:
        f.truncate(3000)
    out = io.StringIO()
    problems = validate_ava_root(bad, "video", out=out)
    text = out.getvalue()
    assert f"{train_csv}:{n + 1}: expected 7 or 8 columns" in text
    assert f"{train_csv}:{n + 2}: box" in text
    assert f"{train_csv}:{n + 3}: unknown action id 42" in text
    assert f"{train_csv}:{n + 4}: timestamp 990" in text
    assert "val_003_0001.mp4: video file not found" in text
    assert "train_003_0002.mp4: cannot open video" in text
    assert len(problems) == 6
    assert validate_main(["--dataset-root", bad, "--decode", "header"]) == 1
    assert validate_main(["--dataset-root", str(tmp_path / "nowhere")]) == 1
