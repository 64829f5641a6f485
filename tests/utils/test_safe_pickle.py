"""The restricted unpickler: numpy/builtin data loads, anything that would run code is refused."""
import collections
import pickle

import numpy as np
import pytest

from evad_d2.testing import RunsShellCommand
from evad_d2.utils.safe_pickle import UnsafePickleError, restricted_load


DATA = {
    "boxes": np.arange(12, dtype=np.float32).reshape(3, 4),
    "labels": [np.int64(3), 2.5, "walk", (1, None)],
    "set": {1, 2},
    "ordered": collections.OrderedDict(x=np.zeros(2, np.uint8)),
    "bytes": b"\x00\xff",
}


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_numpy_and_builtin_data_round_trips_under_every_protocol(protocol):
    out = restricted_load(pickle.dumps(DATA, protocol=protocol))
    assert out.keys() == DATA.keys()
    np.testing.assert_array_equal(out["boxes"], DATA["boxes"])
    assert out["boxes"].dtype == np.float32
    assert out["labels"] == DATA["labels"] and out["set"] == {1, 2} and out["bytes"] == b"\x00\xff"
    assert isinstance(out["ordered"], collections.OrderedDict)


def test_crafted_pickle_is_refused_before_it_runs_and_the_error_names_file_and_global(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "crafted.pkl"
    path.write_bytes(pickle.dumps({"model": RunsShellCommand(marker)}))
    with pytest.raises(UnsafePickleError, match=r"crafted\.pkl.*'(posix|nt)\.system'"):
        restricted_load(path)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a pickle at all", pickle.dumps(DATA)[:25]])
def test_empty_text_and_truncated_files_are_errors_naming_the_file(tmp_path, content):
    path = tmp_path / "broken.pkl"
    path.write_bytes(content)
    with pytest.raises(UnsafePickleError, match=r"broken\.pkl: not a readable pickle"):
        restricted_load(path)


def test_allow_list_can_be_narrowed():
    with pytest.raises(UnsafePickleError, match="numpy"):
        restricted_load(pickle.dumps(np.zeros(2)), allowed=[])
    assert restricted_load(pickle.dumps({"a": [1, 2]}), allowed=[]) == {"a": [1, 2]}
