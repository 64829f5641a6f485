"""AVA-format and UCF101-24/JHMDB dataset loading (evad_d2/data/datasets/) on small files written here."""
import logging
import os
import pickle

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from evad_d2.data import load_ava_dataset, load_ucf_jhmdb_dataset, register_ava, register_ucf_jhmdb
from evad_d2.data import skip_bad_samples_at_load
from evad_d2.data.formats.ava import AvaFormatError, iter_ava_rows, iter_frame_list, read_exclusions
from evad_d2.data.formats.label_map import read_label_map
from evad_d2.data.validate import validate_ava_root
from evad_d2.data.video import VideoReadError

from evad_d2.testing import write_text, write_video

W, H, NFRAMES = 64, 48, 150  # 5 s at 30 fps: timestamps 900..904


LABEL_MAP_V22 = "".join(f'item {{\n  name: "a{i}"\n  id: {i}\n}}\n' for i in (1, 2, 3, 5))
EVAL_MAP_V22 = 'item {\n  name: "a1"\n  id: 1\n}\nitem {\n  name: "a5"\n  id: 5\n}\n'
# v2.1's files use "label_id" in some releases; ids differ from v2.2's here on purpose.
LABEL_MAP_V21 = "".join(f'item {{\n  name: "b{i}"\n  label_id: {i}\n}}\n' for i in (1, 2, 4))


@pytest.fixture
def ava_root(tmp_path):
    root = tmp_path / "ava"
    (root / "annotations").mkdir(parents=True)
    (root / "videos").mkdir()
    for vid in ("vidA", "vidB"):
        write_video(root / "videos" / f"{vid}.mp4", [np.full((H, W, 3), (i * 7) % 256, np.uint8) for i in range(NFRAMES)])
    ann = root / "annotations"
    (ann / "ava_action_list_v2.2.pbtxt").write_text(LABEL_MAP_V22)
    (ann / "ava_action_list_v2.2_for_activitynet_2019.pbtxt").write_text(EVAL_MAP_V22)
    (ann / "ava_action_list_v2.1.pbtxt").write_text(LABEL_MAP_V21)
    rows = [
        # multi-label person 0 (two rows, same box), person 1 single label
        "vidA,0901,0.1,0.2,0.5,0.9,1,0",
        "vidA,0901,0.1,0.2,0.5,0.9,3,0",
        "vidA,0901,0.6,0.1,0.9,0.8,2,1",
        "vidA,0902,0.1,0.2,0.5,0.9,5,0",
        "vidB,0903,0.25,0.25,0.75,0.75,2,4",
        "vidB,0904,0.0,0.0,1.0,1.0,1,4",
    ]
    (ann / "ava_train_v2.2.csv").write_text("\n".join(rows) + "\n")
    (ann / "ava_train_excluded_timestamps_v2.2.csv").write_text("vidB,0904\n")
    (ann / "ava_train_v2.1.csv").write_text("vidA,0901,0.1,0.2,0.5,0.9,4,0\n")
    return root


def test_ava_multilabel_exclusions_and_boxes(ava_root):
    dicts = load_ava_dataset(str(ava_root), "train", "2.2", "video")
    keys = [(d["video_id"], d["timestamp"]) for d in dicts]
    assert keys == [("vidA", 901), ("vidA", 902), ("vidB", 903)]  # vidB@904 excluded
    d = dicts[0]
    assert (d["height"], d["width"], d["num_frames"]) == (H, W, NFRAMES)
    assert d["frame_index"] == 30 and dicts[2]["frame_index"] == 90  # (t - 900) * 30
    assert d["video_path"].endswith("vidA.mp4")
    assert len(d["annotations"]) == 2
    a0, a1 = d["annotations"]
    assert a0["action_ids"] == [1, 3] and a0["person_id"] == 0
    assert a1["action_ids"] == [2] and a1["person_id"] == 1
    assert a0["bbox_mode"] == BoxMode.XYXY_ABS
    np.testing.assert_allclose(a0["bbox"], [0.1 * W, 0.2 * H, 0.5 * W, 0.9 * H])
    assert dicts[2]["annotations"][0]["person_id"] == 4


def test_ava_label_map_versions_and_metadata(ava_root):
    register_ava("_t_ava22", str(ava_root), "train", "2.2", "video")
    register_ava("_t_ava21", str(ava_root), "train", "2.1", "video")
    try:
        m22, m21 = MetadataCatalog.get("_t_ava22"), MetadataCatalog.get("_t_ava21")
        assert m22.action_ids == [1, 2, 3, 5] and m22.action_classes == ["a1", "a2", "a3", "a5"]
        assert m22.eval_action_ids == [1, 5]
        assert m22.exclusions_file.endswith("ava_train_excluded_timestamps_v2.2.csv")
        assert m22.evaluator_type == "ava" and m22.frame_rate == 30
        assert m22.groundtruth_file.endswith("ava_train_v2.2.csv")
        # v2.1 here has no activitynet subset and no exclusions: everything is evaluated.
        assert m21.action_ids == [1, 2, 4] and m21.eval_action_ids == [1, 2, 4]
        assert m21.exclusions_file is None
        assert [a["action_ids"] for a in DatasetCatalog.get("_t_ava21")[0]["annotations"]] == [[4]]
        # The v2.2 label map does not know id 4: the v2.1 CSV would be rejected by it.
    finally:
        for n in ("_t_ava22", "_t_ava21"):
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)


def test_registration_is_lazy(tmp_path):
    root = tmp_path / "later"
    register_ava("_t_lazy", str(root), "train")
    try:
        meta = MetadataCatalog.get("_t_lazy")
        assert meta.get("action_ids") is None
        with pytest.raises(AttributeError, match="generate_ava_like.py"):
            meta.action_ids
        with pytest.raises(FileNotFoundError, match="generate_ava_like.py"):
            DatasetCatalog.get("_t_lazy")
        (root / "annotations").mkdir(parents=True)
        (root / "annotations" / "ava_action_list_v2.2.pbtxt").write_text(LABEL_MAP_V22)
        assert meta.action_ids == [1, 2, 3, 5]  # files created after registration are picked up
    finally:
        DatasetCatalog.remove("_t_lazy")
        MetadataCatalog.remove("_t_lazy")


def test_builtin_names_registered():
    names = set(DatasetCatalog.list())
    for n in ("ava_v2.1_train", "ava_v2.1_val", "ava_v2.2_train", "ava_v2.2_val", "ava_like_train",
              "ava_like_val", "ucf101_24_train", "ucf101_24_test", "jhmdb_train_split3"):
        assert n in names
    assert MetadataCatalog.get("ava_like_val").evaluator_type == "ava"


def test_ava_proposals_attached(ava_root):
    ann = ava_root / "annotations"
    (ann / "ava_train_predicted_boxes.csv").write_text(
        "vidA,0901,0.0,0.0,0.5,0.5,,0.9\nvidA,0901,0.5,0.5,1.0,1.0,,0.4\nvidB,0903,0.1,0.1,0.2,0.2,,0.7\n"
    )
    dicts = load_ava_dataset(str(ava_root), "train", "2.2", "video")
    np.testing.assert_allclose(dicts[0]["proposals"]["boxes"], [[0, 0, W / 2, H / 2], [W / 2, H / 2, W, H]])
    np.testing.assert_allclose(dicts[0]["proposals"]["scores"], [0.9, 0.4])
    assert dicts[1]["proposals"]["boxes"].shape == (0, 4)


def test_ava_frames_source(ava_root):
    from PIL import Image

    for vid in ("vidA", "vidB"):
        d = ava_root / "frames" / vid
        d.mkdir(parents=True)
        for i in range(1, 101):
            Image.new("RGB", (W, H)).save(d / f"{vid}_{i:06d}.jpg")
    dicts = load_ava_dataset(str(ava_root), "train", "2.2", "frames")
    assert dicts[0]["frame_dir"].endswith(os.path.join("frames", "vidA"))
    assert dicts[0]["frame_pattern"] == "vidA_{:06d}.jpg" and dicts[0]["num_frames"] == 100
    # 100 frames end before vidB's 0903 keyframe (frame 90 exists; 0904 is excluded): fine.
    os.remove(ava_root / "frames" / "vidB" / "vidB_000050.jpg")
    with pytest.raises(VideoReadError, match=r"vidB_000050\.jpg.*gap"):
        load_ava_dataset(str(ava_root), "train", "2.2", "frames")


@pytest.mark.parametrize(
    "row, message",
    [
        ("vidA,0901,0.1,0.2,0.5,0.9,1", None),  # 7 columns are valid (no person id)
        ("vidA,0901,0.1,0.2,0.5,1", "expected 7 or 8 columns"),
        ("vidA,0901,0.1,0.2,1.5,0.9,1,0", "outside the frame"),
        ("vidA,0901,0.5,0.2,0.1,0.9,1,0", "empty box"),
        ("vidA,09x1,0.1,0.2,0.5,0.9,1,0", "timestamp"),
        ("vidA,0901,0.1,0.2,0.5,0.9,7,0", "unknown action id 7"),
        ("vidA,0899,0.1,0.2,0.5,0.9,1,0", r"timestamp 899 is frame -30 "),
        ("vidA,0905,0.1,0.2,0.5,0.9,1,0", r"timestamp 905 is frame 150 .*outside video vidA with 150 frames"),
    ],
)
def test_ava_bad_rows_name_file_and_line(ava_root, row, message):
    csv_path = ava_root / "annotations" / "ava_train_v2.2.csv"
    csv_path.write_text("vidA,0901,0.1,0.2,0.5,0.9,1,0\n" + row + "\n")
    if message is None:
        assert len(load_ava_dataset(str(ava_root), "train", "2.2", "video")) == 1
        return
    with pytest.raises(AvaFormatError, match=message) as e:
        load_ava_dataset(str(ava_root), "train", "2.2", "video")
    assert f"{csv_path}:2:" in str(e.value)


def test_ava_bad_exclusions_and_label_map(ava_root):
    ann = ava_root / "annotations"
    (ann / "ava_train_excluded_timestamps_v2.2.csv").write_text("vidB,0904\nvidB,0904,3\n")
    with pytest.raises(AvaFormatError, match=r"excluded_timestamps_v2.2.csv:2: expected 2 columns"):
        load_ava_dataset(str(ava_root), "train", "2.2", "video")
    (ann / "ava_train_excluded_timestamps_v2.2.csv").write_text("")
    (ann / "ava_action_list_v2.2.pbtxt").write_text('item {\n  name: "x"\n}\n')
    with pytest.raises(AvaFormatError, match=r"pbtxt:1: 'item' block 'x' has no 'id'"):
        load_ava_dataset(str(ava_root), "train", "2.2", "video")


def test_ava_missing_and_corrupt_videos(ava_root):
    os.remove(ava_root / "videos" / "vidB.mp4")
    with pytest.raises(VideoReadError, match=r"vidB\.mp4: video file not found .*ava_train_v2.2.csv:5"):
        load_ava_dataset(str(ava_root), "train", "2.2", "video")
    # With skipping, vidB's keyframe is dropped (and logged), the rest loads.
    assert [d["video_id"] for d in load_ava_dataset(str(ava_root), "train", "2.2", "video", skip_bad_videos=True)] == [
        "vidA", "vidA"
    ]
    (ava_root / "videos" / "vidB.mp4").write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(VideoReadError, match=r"vidB\.mp4: cannot open video"):
        load_ava_dataset(str(ava_root), "train", "2.2", "video")


# ---------------------------------------------------------------- UCF101-24 / JHMDB


def _tube(frames, box):
    return np.array([[f, *box] for f in frames], dtype=np.float32)


@pytest.fixture
def ucf_pickle(tmp_path):
    gt = {
        "labels": ["Basketball", "Diving", "Fencing"],
        "gttubes": {
            "Basketball/v1": {0: [_tube(range(2, 5), (10, 20, 50, 80))]},
            # two actors of class 2, overlapping in time; a box partly outside the frame is clipped
            "Fencing/v2": {2: [_tube(range(1, 3), (0, 0, 30, 30)), _tube(range(2, 4), (300, 200, 330, 250))]},
            "Diving/v3": {1: [_tube([5], (1, 1, 9, 9))]},
        },
        "nframes": {"Basketball/v1": 6, "Fencing/v2": 4, "Diving/v3": 5},
        "train_videos": [["Basketball/v1", "Fencing/v2"], ["Diving/v3"], ["Fencing/v2"]],
        "test_videos": [["Diving/v3"], ["Basketball/v1"], ["Basketball/v1"]],
        "resolution": {"Basketball/v1": (240, 320), "Fencing/v2": (240, 320), "Diving/v3": (120, 160)},
    }
    path = tmp_path / "GT.pkl"
    with open(path, "wb") as f:
        pickle.dump(gt, f)
    return str(path), gt


def test_ucf_jhmdb_train_split(ucf_pickle, tmp_path):
    path, _ = ucf_pickle
    dicts = load_ucf_jhmdb_dataset(path, str(tmp_path / "rgb-images"), "train", 0)
    keys = [(d["video_id"], d["timestamp"]) for d in dicts]
    assert keys == [("Basketball/v1", 2), ("Basketball/v1", 3), ("Basketball/v1", 4),
                    ("Fencing/v2", 1), ("Fencing/v2", 2), ("Fencing/v2", 3)]
    d = dicts[0]
    assert d["frame_index"] == 1 and d["num_frames"] == 6 and (d["height"], d["width"]) == (240, 320)
    assert d["frame_dir"] == os.path.join(str(tmp_path / "rgb-images"), "Basketball/v1")
    assert d["frame_pattern"].format(2) == "00002.jpg"
    assert d["annotations"] == [{"bbox": [10.0, 20.0, 50.0, 80.0], "bbox_mode": BoxMode.XYXY_ABS,
                                 "action_ids": [0], "person_id": 0}]
    f2 = dicts[4]["annotations"]
    assert [(a["person_id"], a["action_ids"]) for a in f2] == [(0, [2]), (1, [2])]
    assert f2[1]["bbox"] == [300.0, 200.0, 320.0, 240.0]


def test_ucf_jhmdb_test_split_all_frames_and_registration(ucf_pickle, tmp_path):
    path, _ = ucf_pickle
    dicts = load_ucf_jhmdb_dataset(path, str(tmp_path), "test", 1, frame_ext=".png")
    assert [d["timestamp"] for d in dicts] == [1, 2, 3, 4, 5, 6]  # every frame of the test video
    assert [len(d["annotations"]) for d in dicts] == [0, 1, 1, 1, 0, 0]
    assert dicts[0]["frame_pattern"].format(1) == "00001.png"
    register_ucf_jhmdb("_t_jhmdb", path, str(tmp_path), "train", 2, frame_ext=".png")
    try:
        meta = MetadataCatalog.get("_t_jhmdb")
        assert meta.evaluator_type == "ucf_jhmdb" and meta.gt_file == path and meta.split == "train"
        assert meta.action_classes == ["Basketball", "Diving", "Fencing"] and meta.action_ids == [0, 1, 2]
        assert [d["video_id"] for d in DatasetCatalog.get("_t_jhmdb")] == ["Fencing/v2"] * 3
    finally:
        DatasetCatalog.remove("_t_jhmdb")
        MetadataCatalog.remove("_t_jhmdb")


def test_ucf_jhmdb_bad_pickles(ucf_pickle, tmp_path):
    path, gt = ucf_pickle
    bad = dict(gt)
    del bad["nframes"]
    p = tmp_path / "bad1.pkl"
    p.write_bytes(pickle.dumps(bad))
    with pytest.raises(ValueError, match=r"bad1.pkl: missing key\(s\) \['nframes'\]"):
        load_ucf_jhmdb_dataset(str(p), str(tmp_path), "train")
    bad = dict(gt, nframes=dict(gt["nframes"], **{"Fencing/v2": 2}))
    p.write_bytes(pickle.dumps(bad))
    with pytest.raises(ValueError, match=r"Fencing/v2'? class 2: tube frame 3 outside 1..2"):
        load_ucf_jhmdb_dataset(str(p), str(tmp_path), "train")
    p.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="bad1.pkl: not a readable pickle"):
        load_ucf_jhmdb_dataset(str(p), str(tmp_path), "train")
    with pytest.raises(ValueError, match="split index 3 out of range"):
        load_ucf_jhmdb_dataset(path, str(tmp_path), "train", 3)


def test_ava_label_form_is_read_by_datasets_validate_and_evaluation(ava_root, tmp_path, capsys):
    ann = ava_root / "annotations"
    (ann / "ava_action_list_v2.2.pbtxt").write_text(
        "".join(f'label {{\n  name: "a{i}"\n  label_id: {i}\n  label_type: PERSON_MOVEMENT\n}}\n' for i in (1, 2, 3, 5))
    )
    register_ava("_t_ava_label_form", str(ava_root), "train", "2.2", "video")
    try:
        meta = MetadataCatalog.get("_t_ava_label_form")
        assert meta.action_ids == [1, 2, 3, 5] and meta.eval_action_ids == [1, 5]
        assert len(DatasetCatalog.get("_t_ava_label_form")) == 3
    finally:
        DatasetCatalog.remove("_t_ava_label_form")
        MetadataCatalog.remove("_t_ava_label_form")
    assert validate_ava_root(str(ava_root), "video", "2.2", "header", out=open(os.devnull, "w")) == []
    # The evaluation's command line reads the 80-class form too.
    from evad_d2.evaluation.ava import main as evaluate

    gt = write_text(tmp_path / "gt.csv", "v,0902,0.1,0.1,0.5,0.5,1,0\n")
    det = write_text(tmp_path / "det.csv", "v,0902,0.1,0.1,0.5,0.5,1,0.9\n")
    out = tmp_path / "m.json"
    assert evaluate(["--groundtruth", gt, "--detections", det, "--labelmap", str(ann / "ava_action_list_v2.2.pbtxt"),
                     "--json", str(out)]) in (0, None)
    assert "frame-mAP@0.5IOU: 100.0000" in capsys.readouterr().out


def test_files_with_a_byte_order_mark(ava_root):
    ann = ava_root / "annotations"
    for name in ("ava_train_v2.2.csv", "ava_train_excluded_timestamps_v2.2.csv", "ava_action_list_v2.2.pbtxt"):
        path = ann / name
        write_text(path, path.read_text(), bom=True)
    dicts = load_ava_dataset(str(ava_root), "train", "2.2", "video")
    # Not "\ufeffvidA"; and vidB@904 is still excluded (the exclusions' first id has the BOM).
    assert [(d["video_id"], d["timestamp"]) for d in dicts] == [("vidA", 901), ("vidA", 902), ("vidB", 903)]
    assert read_exclusions(str(ann / "ava_train_excluded_timestamps_v2.2.csv")) == {("vidB", 904)}
    assert read_label_map(str(ann / "ava_action_list_v2.2.pbtxt")) == {1: "a1", 2: "a2", 3: "a3", 5: "a5"}
    assert next(iter_ava_rows(str(ann / "ava_train_v2.2.csv"))).video_id == "vidA"
    frame_list = write_text(ava_root / "train.csv", "original_vido_id video_idx frame_id path labels\nvidA 0 0 vidA/vidA_000001.jpg \"\"\n", bom=True)
    assert [r.video_id for r in iter_frame_list(frame_list)] == ["vidA"]


def test_empty_annotation_csv_is_an_error_naming_the_file(ava_root, capsys):
    csv_path = ava_root / "annotations" / "ava_train_v2.2.csv"
    csv_path.write_text("\n")
    with pytest.raises(AvaFormatError, match=rf"{csv_path}: the annotation CSV has no rows \(empty file\)"):
        load_ava_dataset(str(ava_root), "train", "2.2", "video")
    # Training loads registered datasets through DatasetCatalog: the same error, not "Dataset is empty".
    register_ava("_t_ava_empty", str(ava_root), "train", "2.2", "video")
    try:
        from detectron2.data.build import get_detection_dataset_dicts

        with pytest.raises(AvaFormatError, match="no rows"):
            get_detection_dataset_dicts(["_t_ava_empty"])
    finally:
        DatasetCatalog.remove("_t_ava_empty")
        MetadataCatalog.remove("_t_ava_empty")
    problems = validate_ava_root(str(ava_root), "video", "2.2", "header")
    assert problems == [f"{csv_path}: the annotation CSV has no rows (empty file)"]
    assert "1 problem(s) found" in capsys.readouterr().out


def test_skipping_bad_videos_at_load_covers_every_kind(ava_root, caplog):
    from PIL import Image

    # frames/ source: vidA's folder has a gap, vidB is fine.
    for vid, n in (("vidA", 100), ("vidB", 120)):
        d = ava_root / "frames" / vid
        d.mkdir(parents=True)
        for i in range(1, n + 1):
            Image.new("RGB", (W, H)).save(d / f"{vid}_{i:06d}.jpg")
    os.remove(ava_root / "frames" / "vidA" / "vidA_000007.jpg")
    with pytest.raises(VideoReadError, match=r"vidA_000007\.jpg.*gap"):
        load_ava_dataset(str(ava_root), "train", "2.2", "frames")
    with caplog.at_level(logging.WARNING, logger="evad_d2"), skip_bad_samples_at_load(True) as skips:
        dicts = load_ava_dataset(str(ava_root), "train", "2.2", "frames")
    assert [(d["video_id"], d["timestamp"]) for d in dicts] == [("vidB", 903)]
    assert skips.total == 2  # vidA's keyframes 901 and 902
    assert any("vidA_000007.jpg" in r.getMessage() and "gap" in r.getMessage() for r in caplog.records)
    # video source: vidA does not open, vidB is missing: every keyframe is bad, a clear error.
    (ava_root / "videos" / "vidA.mp4").write_bytes(b"not a video" * 50)
    os.remove(ava_root / "videos" / "vidB.mp4")
    with skip_bad_samples_at_load(True), pytest.raises(RuntimeError, match="every one of the 3 keyframes .* skipped as bad"):
        load_ava_dataset(str(ava_root), "train", "2.2", "video")
    # Off (the default, and outside the context), the first bad video stops loading.
    with skip_bad_samples_at_load(False) as none:
        assert none is None
        with pytest.raises(VideoReadError, match="vidA.mp4: cannot open video"):
            load_ava_dataset(str(ava_root), "train", "2.2", "video")


def test_unclosed_label_map_block_is_blamed_not_the_csv(ava_root, capsys):
    """It used to merge two classes silently: training then blamed the CSV ("unknown action id 2")
    and the evaluation scored one class fewer with exit 0."""
    ann = ava_root / "annotations"
    bad = ann / "ava_action_list_v2.2.pbtxt"
    bad.write_text('item {\n  name: "a1"\n  id: 1\nitem {\n  name: "a2"\n  id: 2\n}\n'
                   'item {\n  name: "a3"\n  id: 3\n}\nitem {\n  name: "a5"\n  id: 5\n}\n')
    with pytest.raises(AvaFormatError, match=rf"^{bad}:1: 'item {{' opened here is not closed before the 'item {{' of line 4"):
        load_ava_dataset(str(ava_root), "train", "2.2", "video")
    problems = validate_ava_root(str(ava_root), "video", "2.2", "header", out=open(os.devnull, "w"))
    assert problems and problems[0].startswith(f"{bad}:1: ")
    from evad_d2.evaluation.ava import main as evaluate

    gt = ann / "ava_train_v2.2.csv"
    assert evaluate(["--groundtruth", str(gt), "--detections", str(gt), "--labelmap", str(bad)]) != 0
    assert f"{bad}:1:" in capsys.readouterr().err
