"""AVA data as mmaction2 and PySlowFast lay it out: frame names, proposal pickles and CSVs."""
import os
import pickle

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from evad_d2.data import load_ava_dataset, register_ava
from evad_d2.data.datasets.ava_layout import ava_files, parse_frame_pattern, video_frame_pattern
from evad_d2.data.formats.ava import AvaFormatError
from evad_d2.data.formats.proposals import read_proposals
from evad_d2.data.video import VideoReadError
from evad_d2.utils.safe_pickle import UnsafePickleError

W, H, NFRAMES = 32, 24, 70  # timestamps 900..902 (frames 0, 30, 60)
LABEL_MAP = "".join(f'item {{\n  name: "a{i}"\n  id: {i}\n}}\n' for i in (1, 2))
GT_ROWS = "vidA,0901,0.1,0.2,0.5,0.9,1,0\nvidA,0902,0.1,0.2,0.5,0.9,2,0\nvidB,0901,0.2,0.2,0.6,0.6,2,3\n"


def _frames(folder, names):
    folder.mkdir(parents=True)
    for i, name in enumerate(names):
        Image.new("RGB", (W, H), (i % 256, 0, 0)).save(folder / name)


@pytest.fixture
def mm_root(tmp_path):
    """mmaction2's layout: annotations/ + rawframes/<vid>/img_00001.jpg, no videos/."""
    root = tmp_path / "ava"
    ann = root / "annotations"
    ann.mkdir(parents=True)
    (ann / "ava_action_list_v2.2.pbtxt").write_text(LABEL_MAP)
    (ann / "ava_train_v2.2.csv").write_text(GT_ROWS)
    for vid in ("vidA", "vidB"):
        _frames(root / "rawframes" / vid, [f"img_{i:05d}.jpg" for i in range(1, NFRAMES + 1)])
    return root


def test_frame_patterns_parse_printf_and_format_forms():
    assert parse_frame_pattern("img_%05d.jpg") == "img_{:05d}.jpg"
    assert parse_frame_pattern("{video_id}_{:06d}.jpg") == "{video_id}_{:06d}.jpg"
    assert video_frame_pattern("{video_id}_%06d.jpg", "a{b}").format(7) == "a{b}_000007.jpg"
    for bad, message in [
        ("img.jpg", "exactly one unnamed field"),
        ("img_%05d_%03d.jpg", "exactly one %d"),
        ("{name}_{:05d}.jpg", "exactly one unnamed field"),
        ("sub/img_{:05d}.jpg", "no path separators"),
        ("img_{:05q}.jpg", "does not format"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_frame_pattern(bad)


def test_mmaction2_rawframes_are_found_and_read(mm_root):
    dicts = load_ava_dataset(str(mm_root), "train")  # frame_source "auto": rawframes/, img_%05d.jpg
    assert [(d["video_id"], d["timestamp"], d["frame_index"]) for d in dicts] == [
        ("vidA", 901, 30), ("vidA", 902, 60), ("vidB", 901, 30)]
    d = dicts[0]
    assert d["frame_dir"] == os.path.join(str(mm_root), "rawframes", "vidA")
    assert d["frame_pattern"] == "img_{:05d}.jpg" and d["num_frames"] == NFRAMES
    assert (d["width"], d["height"]) == (W, H)
    # The clip mapper's reader gets frame index i from file i + 1, as mmaction2 does.
    from evad_d2.data.video import read_frame_folder

    frames = read_frame_folder(d["frame_dir"], d["frame_pattern"], [0, 69])
    assert frames[:, 0, 0, 0].tolist() == [0, 69]


def test_explicit_frame_folder_and_pattern(mm_root):
    _frames(mm_root / "imgs" / "vidA", [f"frame_{i:04d}.png" for i in range(1, NFRAMES + 1)])
    _frames(mm_root / "imgs" / "vidB", [f"frame_{i:04d}.png" for i in range(1, NFRAMES + 1)])
    dicts = load_ava_dataset(str(mm_root), "train", frame_source="frames", frame_folder="imgs", frame_pattern="frame_%04d.png")
    assert dicts[0]["frame_pattern"] == "frame_{:04d}.png" and dicts[0]["frame_dir"].endswith(os.path.join("imgs", "vidA"))
    with pytest.raises(ValueError, match="exactly one unnamed field"):
        load_ava_dataset(str(mm_root), "train", frame_pattern="frame.png")


def test_unknown_frame_names_are_an_error_naming_both_layouts(mm_root):
    os.rename(mm_root / "rawframes" / "vidB" / "img_00001.jpg", mm_root / "rawframes" / "vidB" / "img_00000.jpg")
    with pytest.raises(VideoReadError, match=r"vidB.*'vidB_000001\.jpg' \(AVA/PySlowFast\) or 'img_00001\.jpg' \(mmaction2\).*frame_pattern"):
        load_ava_dataset(str(mm_root), "train")


def test_mmaction2_proposal_pickle_is_attached(mm_root):
    props = {
        "vidA,0901": np.array([[0.0, 0.0, 0.5, 0.5, 0.9], [0.5, 0.5, 1.0, 1.0, 0.3]]),
        "vidB,0901": np.array([[0.25, 0.5, 0.75, 1.0]]),  # (K, 4): no scores
    }
    path = mm_root / "annotations" / "ava_dense_proposals_train.FAIR.recall_93.9.pkl"
    path.write_bytes(pickle.dumps(props, protocol=2))
    assert ava_files(str(mm_root), "train", "2.2")["proposals"] == str(path)  # discovered
    dicts = load_ava_dataset(str(mm_root), "train")
    np.testing.assert_allclose(dicts[0]["proposals"]["boxes"], [[0, 0, W / 2, H / 2], [W / 2, H / 2, W, H]])
    np.testing.assert_allclose(dicts[0]["proposals"]["scores"], [0.9, 0.3])
    assert dicts[1]["proposals"]["boxes"].shape == (0, 4)  # vidA,0902 has none
    np.testing.assert_allclose(dicts[2]["proposals"]["boxes"], [[W / 4, H / 2, 3 * W / 4, H]])
    np.testing.assert_allclose(dicts[2]["proposals"]["scores"], [1.0])


class _Crafted:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_proposal_pickles_that_are_not_plain_arrays_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    crafted = tmp_path / "crafted.pkl"
    crafted.write_bytes(pickle.dumps({"vidA,0901": _Crafted()}))
    with pytest.raises(UnsafePickleError, match=r"crafted\.pkl.*posix\.system|crafted\.pkl.*os\.system"):
        read_proposals(str(crafted))
    assert not (tmp_path / "PWNED").exists()
    cases = [
        ([1, 2], "expected a dict"),
        ({"vidA_0901": np.zeros((1, 5))}, r"key 'vidA_0901' is not '<video_id>,<timestamp>'"),
        ({"vidA,0901": np.zeros((1, 3))}, r"expected a numeric array \(K, 5\) or \(K, 4\)"),
        ({"vidA,0901": np.array([[10.0, 20.0, 300.0, 200.0, 0.9]])}, "not normalised to"),
    ]
    for i, (data, message) in enumerate(cases):
        path = tmp_path / f"bad{i}.pkl"
        path.write_bytes(pickle.dumps(data))
        with pytest.raises(AvaFormatError, match=rf"bad{i}\.pkl: .*{message}"):
            read_proposals(str(path))


def test_binary_proposal_file_named_csv_is_a_clear_error(tmp_path):
    path = tmp_path / "props.csv"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(AvaFormatError, match=r"props\.csv: not a text CSV .* mmaction2's \.pkl"):
        read_proposals(str(path))
    # A pickle under another name is still read as one (it starts with the protocol byte).
    path.write_bytes(pickle.dumps({"v,0902": np.array([[0.1, 0.1, 0.2, 0.2, 0.5]])}, protocol=4))
    boxes, scores = read_proposals(str(path))[("v", 902)]
    np.testing.assert_allclose(boxes, [[0.1, 0.1, 0.2, 0.2]]) and np.testing.assert_allclose(scores, [0.5])


def test_pyslowfast_person_boxes_are_discovered_and_deduplicated(mm_root):
    folder = mm_root / "annotations" / "person_box_67091280_iou90"
    folder.mkdir()
    # boxes_and_labels: one row per label of a box (a box without label: empty action).
    (folder / "ava_detection_train_boxes_and_labels.csv").write_text(
        "vidA,0901,0.1,0.2,0.5,0.9,1,0.95\nvidA,0901,0.1,0.2,0.5,0.9,2,0.95\nvidA,0901,0.5,0.5,1.0,1.0,,0.4\n"
    )
    dicts = load_ava_dataset(str(mm_root), "train")
    np.testing.assert_allclose(dicts[0]["proposals"]["boxes"], [[0.1 * W, 0.2 * H, 0.5 * W, 0.9 * H], [W / 2, H / 2, W, H]], rtol=1e-6)
    np.testing.assert_allclose(dicts[0]["proposals"]["scores"], [0.95, 0.4])
    # AVA's own predicted-boxes file comes first when both exist.
    (mm_root / "annotations" / "ava_train_predicted_boxes.csv").write_text("vidA,0901,0.0,0.0,1.0,1.0,,0.7\n")
    assert load_ava_dataset(str(mm_root), "train")[0]["proposals"]["scores"].tolist() == pytest.approx([0.7])


def test_register_ava_passes_proposal_file_and_frame_options(mm_root, tmp_path):
    path = tmp_path / "mine.pkl"
    path.write_bytes(pickle.dumps({"vidB,0901": np.array([[0.0, 0.0, 1.0, 1.0, 0.8]])}))
    register_ava("_t_mm", str(mm_root), "train", proposal_file=str(path), frame_pattern="img_%05d.jpg")
    try:
        dicts = DatasetCatalog.get("_t_mm")
        assert dicts[2]["proposals"]["scores"].tolist() == pytest.approx([0.8])
        assert dicts[0]["proposals"]["boxes"].shape == (0, 4)
        assert MetadataCatalog.get("_t_mm").action_ids == [1, 2]
    finally:
        DatasetCatalog.remove("_t_mm")
        MetadataCatalog.remove("_t_mm")


def test_validator_reads_mmaction2_layouts_and_proposal_pickles(mm_root, tmp_path):
    from evad_d2.data.validate import main as validate_main, validate_ava_root

    quiet = open(os.devnull, "w")
    (mm_root / "frame_lists").mkdir()
    (mm_root / "frame_lists" / "train.csv").write_text(
        "original_vido_id video_idx frame_id path labels\n"
        + "".join(f'vidA 0 {i} vidA/img_{i + 1:05d}.jpg ""\n' for i in range(NFRAMES)))
    path = mm_root / "annotations" / "ava_dense_proposals_train.FAIR.recall_93.9.pkl"
    path.write_bytes(pickle.dumps({"vidA,0901": np.array([[0.0, 0.0, 0.5, 0.5, 0.9]])}))
    assert validate_ava_root(str(mm_root), out=quiet) == []
    path.write_bytes(pickle.dumps({"vidA,0901": _Crafted()}))
    (problem,) = validate_ava_root(str(mm_root), out=quiet)
    assert "ava_dense_proposals_train.FAIR.recall_93.9.pkl: refused to load" in problem
    os.remove(path)
    (mm_root / "frame_lists" / "train.csv").write_text(
        'original_vido_id video_idx frame_id path labels\nvidA 0 0 vidA/vidA_000001.jpg ""\n')
    (problem,) = validate_ava_root(str(mm_root), out=quiet)
    assert "path 'vidA/vidA_000001.jpg' is not 'vidA/img_00001.jpg'" in problem
    os.remove(mm_root / "frame_lists" / "train.csv")
    # Other names: the validator takes the loader's --frame-folder / --frame-pattern.
    os.rename(mm_root / "rawframes", mm_root / "jpgs")
    for vid in ("vidA", "vidB"):
        for i in range(1, NFRAMES + 1):
            os.rename(mm_root / "jpgs" / vid / f"img_{i:05d}.jpg", mm_root / "jpgs" / vid / f"f{i}.jpg")
    assert validate_main(["--dataset-root", str(mm_root), "--frame-folder", "jpgs", "--frame-pattern", "f%d.jpg"]) == 0
    assert validate_main(["--dataset-root", str(mm_root), "--frame-folder", "jpgs"]) == 1
