"""The zero-mAP doctor (evad_d2/data/doctor/): each check on files made to fail it."""
import io
import os

import numpy as np
import pytest
from PIL import Image

from evad_d2.data.doctor import diagnose, print_findings
from evad_d2.data.doctor.frames import suggest_frame_pattern
from evad_d2.testing import write_video

W, H, N = 64, 48, 90  # frames: 3 s at 30 fps (timestamps 900..902)
LABELS = (1, 2, 3)


def _label_map(ids):
    return "".join(f'item {{\n  name: "a{i}"\n  id: {i}\n}}\n' for i in ids)


def _rows(rows):
    return "".join(",".join(str(v) for v in r) + "\n" for r in rows)


GOOD_ROWS = [("vidA", "0901", 0.1, 0.2, 0.5, 0.9, 1, 0), ("vidA", "0901", 0.1, 0.2, 0.5, 0.9, 2, 0),
             ("vidA", "0902", 0.5, 0.1, 0.9, 0.8, 3, 1)]


@pytest.fixture
def root(tmp_path):
    """A correct root: 3 classes, train rows on vidA, frames/vidA/vidA_000001.jpg..000090.jpg."""
    r = tmp_path / "ava"
    (r / "annotations").mkdir(parents=True)
    (r / "annotations" / "ava_action_list_v2.2.pbtxt").write_text(_label_map(LABELS))
    (r / "annotations" / "ava_train_v2.2.csv").write_text(_rows(GOOD_ROWS))
    _frames(r / "frames" / "vidA", [f"vidA_{i:06d}.jpg" for i in range(1, N + 1)])
    return r


def _frames(folder, names):
    folder.mkdir(parents=True)
    img = Image.new("RGB", (W, H))
    for name in names:
        img.save(folder / name)


def _by_check(findings, check):
    return [f for f in findings if f.check == check]


def _problem(findings, check):
    (f,) = [f for f in _by_check(findings, check) if f.status == "problem"]
    return f


def _no_problem(findings):
    assert [f for f in findings if f.status == "problem"] == []


def test_a_correct_root_has_no_problem(root):
    findings = diagnose(str(root), num_classes=3)
    _no_problem(findings)
    assert {f.check for f in findings} == {"class ids", "class count", "timestamps", "frame naming", "frame rate", "box units"}
    out = io.StringIO()
    assert print_findings(findings, out) == 0
    assert "[ok     ] frame naming" in out.getvalue() and "named like '<video_id>_000001.jpg'" in out.getvalue()


def test_class_ids_zero_based_and_unknown(root):
    ann = root / "annotations" / "ava_train_v2.2.csv"
    ann.write_text(_rows([r[:6] + (r[6] - 1, r[7]) for r in GOOD_ROWS]))  # ids 0, 1, 2
    f = _problem(diagnose(str(root)), "class ids")
    assert "1 rows have action ids not in the label map" in f.message and "ids 0;" in f.message
    assert "ava_train_v2.2.csv:1" in f.message and "look 0-based" in f.message
    ann.write_text(_rows(GOOD_ROWS + [("vidA", "0902", 0.1, 0.1, 0.2, 0.2, 17, 3)]))
    f = _problem(diagnose(str(root)), "class ids")
    assert "ids 17;" in f.message and ":4)" in f.message and "0-based" not in f.message


def test_classes_without_training_rows_are_noted(root):
    (root / "annotations" / "ava_action_list_v2.2.pbtxt").write_text(_label_map((1, 2, 3, 4)))
    (note,) = [f for f in diagnose(str(root)) if f.check == "class ids" and f.status == "note"]
    assert note.message.startswith("classes 4 have no training rows")


def test_sixty_class_evaluation_list_as_the_model_label_map(root):
    ava_eval_ids = [i for i in range(1, 81) if i not in (2, 16, 18, 19, 21, 23, 25, 31, 32, 33, 35, 39, 40, 42, 44, 50, 53, 55, 71, 75)]
    assert len(ava_eval_ids) == 60
    (root / "annotations" / "ava_action_list_v2.2.pbtxt").write_text(_label_map(ava_eval_ids))
    (root / "annotations" / "ava_train_v2.2.csv").write_text(_rows([r[:6] + (1, r[7]) for r in GOOD_ROWS]))
    f = _problem(diagnose(str(root)), "class count")
    assert "has 60 classes with ids up to 80: that is AVA's evaluation list" in f.message
    assert "ava_action_list_v2.2_for_activitynet_2019.pbtxt" in f.fix


def test_model_class_count_differs_from_the_label_map(root):
    f = _problem(diagnose(str(root), num_classes=80), "class count")
    assert "predicts 80 classes" in f.message and "label map has 3" in f.message
    assert "MODEL.EVAD.NUM_ACTION_CLASSES 3" in f.fix and "NEW_ACTION_CLASSES True" in f.fix


def test_timestamps_without_the_900_offset_and_fractional(root):
    ann = root / "annotations" / "ava_train_v2.2.csv"
    ann.write_text(_rows([(r[0], str(int(r[1]) - 900)) + r[2:] for r in GOOD_ROWS]))  # 1, 1, 2
    f = _problem(diagnose(str(root)), "timestamps")
    assert f.message.startswith("every timestamp is below 900 (first 1 at ") and "without AVA's +900 offset" in f.message
    assert "video_start_sec=0" in f.fix
    ann.write_text(_rows(GOOD_ROWS + [("vidA", "901.5", 0.1, 0.2, 0.5, 0.9, 1, 0)]))
    f = _problem(diagnose(str(root)), "timestamps")
    assert "1 timestamps are not whole seconds (first 901.5 at" in f.message


def test_exclusions_of_annotated_keyframes_and_other_offsets(root):
    ex = root / "annotations" / "ava_train_excluded_timestamps_v2.2.csv"
    ex.write_text("vidA,0901\nvidA,0902\n")
    f = _problem(diagnose(str(root)), "exclusions")
    assert "2 of the 2 annotated keyframes" in f.message and "mAP 0" in f.message
    ex.write_text("vidA,0901\n")  # one of two: a note
    (note,) = _by_check(diagnose(str(root)), "exclusions")
    assert note.status == "note" and note.message.startswith("1 annotated keyframes")
    ex.write_text("vidA,0001\nvidA,0003\n")  # written without the offset: matches nothing
    f = _problem(diagnose(str(root)), "exclusions")
    assert "different time offsets" in f.message


def test_frame_naming_zero_based_and_other_patterns(root):
    folder = root / "frames" / "vidA"
    for i in range(1, N + 1):  # renumber from 0
        os.rename(folder / f"vidA_{i:06d}.jpg", folder / f"vidA_{i - 1:06d}.jpg.tmp")
    for name in os.listdir(folder):
        os.rename(folder / name, folder / name[:-4])
    f = _problem(diagnose(str(root)), "frame naming")
    assert "'<video_id>_000001.jpg' (AVA/PySlowFast) or 'img_00001.jpg' (mmaction2)" in f.message
    assert "files are named like '{video_id}_%06d.jpg' (first number 0) numbered from 0" in f.message
    assert suggest_frame_pattern(["frame_0001.png", "frame_0002.png"], "vidA") == ("frame_%04d.png", 1)
    assert suggest_frame_pattern(["notes.txt"], "vidA") is None
    # With the pattern given, frames named otherwise are fine.
    _frames(root / "imgs" / "vidA", [f"frame_{i:04d}.png" for i in range(1, N + 1)])
    findings = diagnose(str(root), frame_source="frames", frame_folder="imgs", frame_pattern="frame_%04d.png")
    _no_problem(findings)


def test_frames_extracted_at_the_native_rate(root, tmp_path):
    # A 3 s video at 10 fps, its frames extracted at 10 fps (30 files) instead of 30 fps (90).
    (root / "videos").mkdir()
    write_video(root / "videos" / "vidA.mp4", [np.zeros((H, W, 3), np.uint8) for _ in range(30)], rate=10)
    folder = root / "frames" / "vidA"
    for i in range(31, N + 1):
        os.remove(folder / f"vidA_{i:06d}.jpg")
    f = _problem(diagnose(str(root)), "frame rate")
    assert "has 30 frames, but 3.00 s at 30 fps are 90" in f.message and "extracted at 10 fps (= its 10 fps)" in f.message
    # Without the video: the last keyframe (902 = frame 60) is past the 30 frames.
    os.remove(root / "videos" / "vidA.mp4")
    os.rmdir(root / "videos")
    f = _problem(diagnose(str(root)), "frame rate")
    assert "timestamp 902) is frame 60 at 30 fps, but its folder has 30 frames" in f.message


def test_boxes_in_pixels_and_as_width_height(root):
    ann = root / "annotations" / "ava_train_v2.2.csv"
    ann.write_text(_rows([r[:2] + (6.4, 9.6, 32, 43.2) + r[6:] for r in GOOD_ROWS]))
    f = _problem(diagnose(str(root)), "box units")
    assert "3 of 3 boxes have coordinates above 1" in f.message and "pixels of the 64x48 frames" in f.message
    ann.write_text(_rows([r[:2] + (0.5, 0.2, 0.3, 0.6) + r[6:] for r in GOOD_ROWS]))  # x, y, w, h
    f = _problem(diagnose(str(root)), "box units")
    assert "look like (x, y, width, height)" in f.message


def test_detections_class_ids_and_keyframes(root, tmp_path):
    det = tmp_path / "ava_detections.csv"
    det.write_text("vidA,0901,0.1,0.2,0.5,0.9,0,0.9\nvidA,0901,0.1,0.2,0.5,0.9,2,0.8\n")  # 0-based: 0..2
    f = _problem(diagnose(str(root), detections=str(det)), "detections")
    assert "class ids 0 are not in the label map" in f.message and "look 0-based" in f.message
    det.write_text("vidA,0001,0.1,0.2,0.5,0.9,1,0.9\n")  # timestamps without the offset
    f = _problem(diagnose(str(root), detections=str(det)), "detections")
    assert "no detection is on a ground-truth keyframe (e.g. detection ('vidA', 1.0)" in f.message
    det.write_text("vidA,0901,0.1,0.2,0.5,0.9,1,0.9\nvidA,0901,6.4,9.6,32,43.2,1,0.5\n")  # one in pixels
    f = _problem(diagnose(str(root), detections=str(det)), "detections")
    assert "1 of 2 boxes have coordinates above 1" in f.message
    det.write_text("vidA,0901,0.1,0.2,0.5,0.9,1,0.9\nvidA,0901,0.5,0.2,0.5,0.9,1,0.1\n")  # a degenerate box is fine
    (ok,) = _by_check(diagnose(str(root), detections=str(det)), "detections")
    assert ok.status == "ok" and "2 detections on 1 of the 2 ground-truth keyframes" in ok.message


def test_validate_explain_prints_findings_and_sets_the_exit_code(root, tmp_path, capsys):
    from evad_d2.data.validate import main as validate_main

    assert validate_main(["--dataset-root", str(root), "--explain", "--num-classes", "3"]) == 0
    out = capsys.readouterr().out
    assert out.index("OK: ") < out.index("The usual causes of a zero mAP:") < out.index("no known cause of a zero mAP found")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("MODEL:\n  EVAD:\n    NUM_ACTION_CLASSES: 80\n")
    assert validate_main(["--dataset-root", str(root), "--explain", "--config-file", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert "[PROBLEM] class count" in out and "fix: set MODEL.EVAD.NUM_ACTION_CLASSES 3" in out
    assert validate_main(["--dataset-root", str(root)]) == 0  # without --explain: the validation only
