"""The UCF101-24 / JHMDB ground-truth pickle: validation errors, Python 2 pickles, crafted pickles
refused by the reader, the dataset loader and the lazy metadata alike."""
import pickle
import pickletools

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from evad_d2.data import load_ucf_jhmdb_dataset, register_ucf_jhmdb
from evad_d2.data.formats.ucf_jhmdb import GTPickleError, load_gt_pickle
from evad_d2.testing import Py2Pickler, RunsShellCommand, small_ucf_gt, write_pickle


def test_load_gt_pickle_and_errors(tmp_path):
    gt = load_gt_pickle(write_pickle(tmp_path, small_ucf_gt()))
    assert gt["gttubes"]["run/v1"][0][0].shape == (10, 5)
    bad = small_ucf_gt()
    del bad["resolution"]
    with pytest.raises(GTPickleError, match=r"bad.pkl: missing key\(s\) \['resolution'\]"):
        load_gt_pickle(write_pickle(tmp_path, bad, "bad.pkl"))
    bad = small_ucf_gt()
    bad["gttubes"]["run/v1"][0] = [np.zeros((4, 4))]
    with pytest.raises(GTPickleError, match=r"gttubes\['run/v1'\]\[0\]\[0\] must be an \(n, 5\) array"):
        load_gt_pickle(write_pickle(tmp_path, bad, "bad.pkl"))
    bad = small_ucf_gt()
    bad["gttubes"]["run/v1"][5] = bad["gttubes"]["run/v1"].pop(0)
    with pytest.raises(GTPickleError, match="label 5 outside 0..1"):
        load_gt_pickle(write_pickle(tmp_path, bad, "bad.pkl"))
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(GTPickleError, match="junk.pkl: not a readable pickle"):
        load_gt_pickle(str(tmp_path / "junk.pkl"))


def test_python2_style_gt_pickle_loads(tmp_path):
    path = tmp_path / "UCF101v2-GT.pkl"
    with open(path, "wb") as f:
        Py2Pickler(f, protocol=2).dump(small_ucf_gt())
    ops = {op.name for op, _, _ in pickletools.genops(path.read_bytes())}
    assert {"SHORT_BINSTRING", "PROTO"} <= ops and "SHORT_BINUNICODE" not in ops and "BINUNICODE" not in ops
    assert b"_codecs" not in path.read_bytes()
    gt = load_gt_pickle(str(path))
    assert gt["labels"] == ["run", "jump"] and gt["test_videos"] == [["run/v1", "jump/v2"]]
    np.testing.assert_array_equal(gt["gttubes"]["jump/v2"][1][0], small_ucf_gt()["gttubes"]["jump/v2"][1][0])
    assert gt["resolution"]["run/v1"] == (60, 80)


def test_crafted_gt_pickle_is_refused_everywhere_and_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    bad = small_ucf_gt()
    bad["labels"] = ["run", RunsShellCommand(marker)]
    path = tmp_path / "JHMDB-GT.pkl"
    path.write_bytes(pickle.dumps(bad, protocol=2))
    refused = r"JHMDB-GT\.pkl: refused to load: the pickle needs the global '(posix|nt)\.system'"
    with pytest.raises(GTPickleError, match=refused):
        load_gt_pickle(str(path))
    with pytest.raises(GTPickleError, match=refused):
        load_ucf_jhmdb_dataset(str(path), str(tmp_path), "test")
    register_ucf_jhmdb("_t_crafted_ucf", str(path), str(tmp_path), "test")
    try:
        with pytest.raises(GTPickleError, match=refused):
            DatasetCatalog.get("_t_crafted_ucf")
        with pytest.raises(GTPickleError, match=refused):
            MetadataCatalog.get("_t_crafted_ucf").action_classes
    finally:
        DatasetCatalog.remove("_t_crafted_ucf")
        MetadataCatalog.remove("_t_crafted_ucf")
    assert not marker.exists()
