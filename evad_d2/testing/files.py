"""Small input files written by the tests: text, AVA evaluation CSVs, UCF101-24 / JHMDB ground truth,
pickles (see :mod:`evad_d2.testing`)."""
import os
import pickle
import struct
from typing import Tuple

import numpy as np

BOM = "\ufeff"  # the UTF-8 byte-order mark, as text


def write_text(path, text: str, bom: bool = False) -> str:
    """Write ``text`` as UTF-8 (after a byte-order mark with ``bom``) to ``path`` (a pathlib.Path);
    returns the path as str."""
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return str(path)


AVA_BOX_A = (0.1, 0.1, 0.4, 0.9)  # normalised x1, y1, x2, y2
AVA_BOX_B = (0.5, 0.2, 0.9, 0.8)
# A small AVA ground truth: (video_id, timestamp, box, action_id, person_id) rows.
AVA_GT3 = [("vidA", 902, AVA_BOX_A, 1, 0), ("vidA", 902, AVA_BOX_A, 2, 0), ("vidA", 903, AVA_BOX_B, 3, 1),
           ("vidB", 1000, AVA_BOX_B, 1, 0)]


def write_ava_files(tmp_path, gt_rows, det_rows, classes=(1, 2, 3), exclusions=()) -> Tuple[str, str, str, str]:
    """AVA evaluation inputs in ``tmp_path``: ``gt.csv`` from (video, ts, box, action, person) rows,
    ``det.csv`` from (video, ts, box, action, score) rows, ``map.pbtxt`` naming ``classes`` and
    ``ex.csv`` from (video, ts) ``exclusions``; returns their paths (gt, det, label map, exclusions)."""
    lm = tmp_path / "map.pbtxt"
    lm.write_text("".join(f'item {{\n  name: "act{c}"\n  id: {c}\n}}\n' for c in classes))
    gt = tmp_path / "gt.csv"
    gt.write_text("".join(f"{v},{t:04d},{b[0]},{b[1]},{b[2]},{b[3]},{c},{p}\n" for v, t, b, c, p in gt_rows))
    det = tmp_path / "det.csv"
    det.write_text("".join(f"{v},{t:04d},{b[0]},{b[1]},{b[2]},{b[3]},{c},{s}\n" for v, t, b, c, s in det_rows))
    ex = tmp_path / "ex.csv"
    ex.write_text("".join(f"{v},{t:04d}\n" for v, t in exclusions))
    return str(gt), str(det), str(lm), str(ex)


def evaluate_ava_rows(tmp_path, gt_rows, det_rows, classes=(1, 2, 3), exclusions=(), protocol="pyslowfast"):
    """The frame-mAP result of ``evaluate_ava_files`` on :func:`write_ava_files`' files."""
    from ..evaluation.ava import evaluate_ava_files

    gt, det, lm, ex = write_ava_files(tmp_path, gt_rows, det_rows, classes, exclusions)
    result, _ = evaluate_ava_files(gt, det, lm, ex, protocol=protocol)
    return result


def ucf_tube(frames, box) -> np.ndarray:
    """(L, 5) UCF/JHMDB ground-truth tube: rows ``(frame, x1, y1, x2, y2)``, ``box`` on each frame."""
    frames = np.asarray(list(frames), dtype=np.float64)
    return np.concatenate([frames[:, None], np.tile(np.asarray(box, dtype=np.float64), (len(frames), 1))], axis=1)


def small_ucf_gt() -> dict:
    """A UCF101-24 / JHMDB ground truth (the layout of :mod:`evad_d2.data.formats.ucf_jhmdb`): two
    test videos (class 0 and class 1) and a training video."""
    return {
        "labels": ["run", "jump"],
        "gttubes": {
            "run/v1": {0: [ucf_tube(range(1, 11), [0, 0, 10, 10])]},
            "jump/v2": {1: [ucf_tube(range(3, 9), [20, 20, 40, 50])]},
            "run/v0": {0: [ucf_tube(range(1, 5), [0, 0, 10, 10])]},
        },
        "nframes": {"run/v1": 12, "jump/v2": 10, "run/v0": 5},
        "train_videos": [["run/v0"]],
        "test_videos": [["run/v1", "jump/v2"]],
        "resolution": {"run/v1": (60, 80), "jump/v2": (60, 80), "run/v0": (60, 80)},
    }


def write_pickle(tmp_path, obj, name: str = "gt.pkl") -> str:
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


class RunsShellCommand:
    """Pickles as ``os.system("touch MARKER")``: loading it with plain pickle makes the marker file,
    so a test can show that a loader does not (the attack evad_d2.utils.safe_pickle refuses)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_crafted_checkpoint(path, marker) -> str:
    """A model-zoo-shaped checkpoint at ``path`` (plain pickle for ``.pkl``, else ``torch.save``)
    whose one weight runs ``touch MARKER`` when unpickled (:class:`RunsShellCommand`); the path as str."""
    import torch

    payload = {"model": {"backbone.net.norm.weight": RunsShellCommand(marker)}, "__author__": "attacker"}
    if str(path).endswith(".pkl"):
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    else:
        torch.save(payload, str(path))
    return str(path)


def folder_files(folder) -> list:
    """The names in ``folder``, sorted."""
    return sorted(os.listdir(folder))
