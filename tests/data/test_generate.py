"""The bundled generated dataset and the validation command."""
import csv
import hashlib
import io
import os
import subprocess
import sys

import numpy as np
import pytest

from evad_d2.data import ClipDatasetMapper, load_ava_dataset
from evad_d2.data.formats.label_map import read_label_map
from evad_d2.data.synthetic import GeneratorSettings, generate
from evad_d2.data.synthetic.actors import MAX_MIN_CONTRAST, Actor, contrasting_color, make_actors
from evad_d2.data.validate import main as validate_main
from evad_d2.data.validate import validate_ava_root
from evad_d2.testing import REPO_ROOT as REPO

SCRIPT = os.path.join(REPO, "datasets", "generate_ava_like.py")


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
    generate(again, GeneratorSettings(seed=3, num_train_videos=4, num_val_videos=2, duration=6), log=lambda *a: None)
    assert _digest(again) == _digest(generated)


def test_generated_labels_match_the_motion():
    rng = np.random.default_rng(0)
    width, height, duration = 160, 120, 8
    seen, changed = set(), 0
    for _ in range(40):
        background = rng.integers(60, 200, size=3)
        actors = make_actors(rng, width, height, duration, background, (1.3, 1.6), 2, 200)
        assert 1 <= len(actors) <= 2
        for actor in actors:
            labels = [tuple(actor.action_ids(k)) for k in range(2, duration - 1)]
            changed += len(set(labels)) > 1
            for k, ids in zip(range(2, duration - 1), labels):
                seen.update(ids)
                assert ids[0] in (1, 2, 3, 5, 6) and ids[1:] in ((), (4,))
                if 4 in ids:
                    assert ids[0] in (1, 2, 6), "wave only comes with stand/walk"
                # The second around keyframe k (7 of the quick-start's 8 frames, 4 apart) sees one action.
                ts = [k + d / 30 for d in range(-12, 13, 4)]
                assert {tuple(actor.action_ids(t)) for t in ts} == {ids}
                xs = np.array([actor.center_x(t) for t in ts])
                steps = np.diff(xs) * 30 / 4  # px per second
                boxes = np.array([actor.box(t, width, height) for t in ts])
                if ids[0] == 1:
                    assert np.all((steps <= -10 + 1e-6) & (steps >= -15 - 1e-6))
                elif ids[0] == 2:
                    assert np.all((steps >= 10 - 1e-6) & (steps <= 15 + 1e-6))
                else:
                    assert np.all(steps == 0), "only walkers move sideways"
                if ids == (6,):
                    assert np.all(boxes == boxes[0]), "a still stander's box does not change"
                if ids[0] == 3:
                    assert np.ptp(boxes[:, 3]) > 5, "a jumper's feet leave the ground"
                if ids[0] == 5:
                    w = boxes[:, 2] - boxes[:, 0]
                    assert np.ptp(w) > 5, "a spinner's box changes shape"
            # Walkers turn around at the edges: an upright figure (17 px x scale to either side of
            # its centre) never leaves the frame.
            margin = 17 * actor.scale
            for t in np.arange(0, duration, 1 / 30):
                assert margin - 1e-6 <= actor.center_x(t) <= width - margin + 1e-6, t
            # Positions are continuous across action changes.
            for k in range(1, duration):
                edge = Actor.segment_start(k)
                assert abs(actor.center_x(edge - 1e-6) - actor.center_x(edge)) < 1e-3
    assert seen == {1, 2, 3, 4, 5, 6}
    assert changed > 10, "actions change within videos"


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


def test_generator_palettes_and_bad_options(tmp_path):
    rng = np.random.default_rng(1)
    background = np.array([100, 150, 200])
    dark = make_actors(rng, 160, 120, 6, background, (1.3, 1.6), 2, 200, "dark")
    assert all(max(c) < 70 for a in dark for c in a.colors)
    bright = make_actors(rng, 160, 120, 6, background, (1.3, 1.6), 2, 200, "random")
    assert all(np.abs(np.array(c) - background).sum() >= 200 for a in bright for c in a.colors)
    with pytest.raises(ValueError, match="palette"):
        make_actors(rng, 160, 120, 6, background, (1.3, 1.6), 2, 200, "pastel")
    with pytest.raises(ValueError, match="actor-scale"):
        generate(str(tmp_path / "x"), GeneratorSettings(seed=0, num_train_videos=1, num_val_videos=0, duration=6, scale_range=(3.0, 3.0)), log=lambda *a: None)
    with pytest.raises(ValueError, match="max-actors"):
        generate(str(tmp_path / "x"), GeneratorSettings(seed=0, num_train_videos=1, num_val_videos=0, duration=6, max_actors=0), log=lambda *a: None)
    with pytest.raises(ValueError, match=r"--min-contrast must be in \[0, 384\]"):
        generate(str(tmp_path / "x"), GeneratorSettings(seed=0, num_train_videos=1, num_val_videos=0, duration=6, min_contrast=385), log=lambda *a: None)


def test_contrasting_color_at_the_largest_distances():
    rng = np.random.default_rng(0)
    background = np.array([20, 240, 128])
    # The farthest colour is (255, 0, 0): 235 + 240 + 128 = 603 away; random draws rarely reach 590.
    colors = [contrasting_color(rng, background, 590) for _ in range(20)]
    assert all(np.abs(np.array(c) - background).sum() >= 590 for c in colors)
    assert contrasting_color(rng, background, 603) == (255, 0, 0)
    with pytest.raises(ValueError, match="no colour is 604"):
        contrasting_color(rng, background, 604)
    # Any background has a colour MAX_MIN_CONTRAST away.
    for grey in (127, 128):
        assert np.abs(np.array(contrasting_color(rng, np.full(3, grey), MAX_MIN_CONTRAST)) - grey).sum() >= 384


def test_ensure_generated_regenerates_only_when_settings_or_code_change(tmp_path, monkeypatch):
    from evad_d2.data.synthetic import dataset, ensure_generated

    calls = []
    monkeypatch.setattr(dataset, "generate", lambda out, settings, log: calls.append(settings))
    settings = GeneratorSettings(seed=1)
    assert ensure_generated(str(tmp_path), settings)
    assert not ensure_generated(str(tmp_path), settings)
    assert ensure_generated(str(tmp_path), GeneratorSettings(seed=2))
    monkeypatch.setattr(dataset, "generator_sha256", lambda: "a changed generator")
    assert ensure_generated(str(tmp_path), GeneratorSettings(seed=2))
    assert calls == [settings, GeneratorSettings(seed=2), GeneratorSettings(seed=2)]
