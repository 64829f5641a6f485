"""Model-zoo ``.pkl`` files of numpy arrays (detectron2 zoo layouts, old protocols, Caffe2) and
pycls ``.pyth`` files load with detectron2's semantics; other pickled weights are an error naming
the key."""
import pickle

import numpy as np
import pytest
import torch

from evad_d2.checkpoint import CheckpointFormatError, EVADCheckpointer, load_pickle_checkpoint
from evad_d2.testing import (
    TINY_CONFIG as TINY,
    assert_same_weights,
    build_model_from_file,
    randomise_weights,
)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("layout", ["detectron2_zoo", "detectron2_zoo_exact_names", "bare_dict"])
def test_model_zoo_pickle_of_numpy_arrays_loads(tmp_path, protocol, layout):
    source = randomise_weights(build_model_from_file(TINY), 3)
    arrays = {k: v.numpy().copy() for k, v in source.state_dict().items()}
    payload = {
        "detectron2_zoo": {"model": arrays, "__author__": "someone", "matching_heuristics": True},
        "detectron2_zoo_exact_names": {"model": arrays, "__author__": "someone"},
        "bare_dict": arrays,
    }[layout]
    path = tmp_path / "weights.pkl"
    with open(path, "wb") as f:
        pickle.dump(payload, f, protocol=protocol)
    target = build_model_from_file(TINY)
    checkpointer = EVADCheckpointer(target)
    checkpointer.load(str(path))
    assert_same_weights(target, arrays)
    assert checkpointer.last_load["missing"] == [] and len(checkpointer.last_load["loaded"]) == len(arrays)


@pytest.mark.parametrize("protocol", [0, 1, 2])
def test_old_protocol_pickle_with_empty_and_fortran_arrays_loads(tmp_path, protocol):
    # Protocols 0-2 pickle an empty array's data as bytes(), a Fortran-ordered one transposed.
    weights = {"a.empty": np.zeros((0, 3), np.float32), "b.weight": np.arange(6, dtype=np.int64).reshape(2, 3).T}
    path = tmp_path / "old.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "x"}, f, protocol=protocol)
    loaded = load_pickle_checkpoint(str(path))["model"]
    assert loaded["a.empty"].shape == (0, 3) and loaded["a.empty"].dtype == np.float32
    assert np.array_equal(loaded["b.weight"], [[0, 3], [1, 4], [2, 5]])


def test_caffe2_pickle_is_read_as_detectron2_reads_it(tmp_path):
    w, b = np.ones((2, 3), np.float32), np.zeros(2, np.float32)
    path = tmp_path / "R-50.pkl"
    with open(path, "wb") as f:
        pickle.dump({"blobs": {"conv1_w": w, "conv1_b": b, "conv1_w_momentum": w}, "cfg": "TRAIN: ..."}, f, protocol=2)
    loaded = load_pickle_checkpoint(str(path))
    assert loaded["__author__"] == "Caffe2" and loaded["matching_heuristics"] is True
    assert sorted(loaded["model"]) == ["conv1_b", "conv1_w"]  # momenta dropped, as detectron2 does
    assert np.array_equal(loaded["model"]["conv1_w"], w)


@pytest.mark.parametrize(
    "weights, message",
    [
        ({"a.weight": np.array([1, "x"], dtype=object)}, "'a.weight' is a array of dtype object"),
        ({"a.weight": [1.0, 2.0]}, "'a.weight' is a list"),
        ({"a.weight": "text"}, "'a.weight' is a str"),
    ],
)
def test_pickle_weights_other_than_numeric_arrays_are_an_error_naming_the_key(tmp_path, weights, message):
    path = tmp_path / "odd.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "x"}, f)
    with pytest.raises(CheckpointFormatError, match=str(path) + ".*" + message.replace("(", r"\(")):
        load_pickle_checkpoint(str(path))


def test_pyth_from_pycls_is_read_as_detectron2_reads_it(tmp_path):
    source = randomise_weights(build_model_from_file(TINY), 4)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    state["backbone.bn.num_batches_tracked"] = torch.tensor(3)
    path = tmp_path / "pycls.pyth"
    torch.save({"model_state": state, "epoch": 1}, str(path))
    target = build_model_from_file(TINY)
    checkpointer = EVADCheckpointer(target)
    checkpointer.load(str(path))
    assert_same_weights(target, state)
    assert checkpointer.last_load["unexpected"] == []  # num_batches_tracked dropped, as detectron2 does
