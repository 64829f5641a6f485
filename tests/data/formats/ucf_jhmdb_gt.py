"""A small UCF101-24 / JHMDB ground-truth pickle for tests (the layout of
:mod:`evad_d2.data.formats.ucf_jhmdb`), and a writer of Python 2 style pickles like the released ones."""
import pickle
import struct

import numpy as np

__all__ = ["tube", "small_gt", "write_gt", "Py2Pickler"]


def tube(frames, box):
    """(L, 5) ground-truth tube: ``box`` on each of ``frames``."""
    frames = np.asarray(list(frames), dtype=np.float64)
    return np.concatenate([frames[:, None], np.tile(np.asarray(box, dtype=np.float64), (len(frames), 1))], axis=1)


def small_gt():
    """Two test videos (class 0 and class 1) and a training video."""
    return {
        "labels": ["run", "jump"],
        "gttubes": {
            "run/v1": {0: [tube(range(1, 11), [0, 0, 10, 10])]},
            "jump/v2": {1: [tube(range(3, 9), [20, 20, 40, 50])]},
            "run/v0": {0: [tube(range(1, 5), [0, 0, 10, 10])]},
        },
        "nframes": {"run/v1": 12, "jump/v2": 10, "run/v0": 5},
        "train_videos": [["run/v0"]],
        "test_videos": [["run/v1", "jump/v2"]],
        "resolution": {"run/v1": (60, 80), "jump/v2": (60, 80), "run/v0": (60, 80)},
    }


def write_gt(tmp_path, obj, name="gt.pkl"):
    """Pickle ``obj`` (protocol 2) to ``tmp_path / name``; returns the path as str."""
    path = tmp_path / name
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    return str(path)


class Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 ``str`` (SHORT_BINSTRING / BINSTRING), as cPickle protocol 2
    wrote the released ACT pickles; Python 3 reads them back only with ``encoding="latin1"``."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str
