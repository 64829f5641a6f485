"""The UCF101-24 / JHMDB ground-truth pickle of the action-detection literature.

``UCF101v2-GT.pkl`` / ``JHMDB-GT.pkl`` (as released with the ACT detector and used by WOO,
TubeR, YOWO, MOC) hold a dict::

    labels        [class name, ...]                      class index = position
    gttubes       {video: {class index: [tube, ...]}}    tube: (n, 5) array of rows
                                                         (frame number 1-based, x1, y1, x2, y2) in pixels
    nframes       {video: number of frames}
    train_videos  [[video, ...] per split]               UCF101-24: 1 split, JHMDB: 3
    test_videos   [[video, ...] per split]
    resolution    {video: (height, width)}

One reader (:func:`load_gt_pickle`) serves the dataset loader and the evaluator, so both accept
exactly the same files.
"""
from typing import Dict, List

import numpy as np
from iopath.common.file_io import g_pathmgr

from evad_d2.utils.safe_pickle import UnsafePickleError, restricted_load

__all__ = ["GT_KEYS", "GTPickleError", "load_gt_pickle", "split_videos", "test_videos"]

# The keys every ground-truth pickle must have (``train_videos`` is optional: only test splits
# are read by the evaluation).
GT_KEYS = ("labels", "gttubes", "nframes", "test_videos", "resolution")


class GTPickleError(ValueError):
    """A malformed or refused ground-truth pickle; the message names the file and the offending key."""


def load_gt_pickle(path: str) -> Dict:
    """Load and validate an ACT-style ground-truth pickle (layout in the module docstring).

    Read with :func:`evad_d2.utils.safe_pickle.restricted_load`: only containers, numbers,
    strings and numpy arrays are admitted (all these files hold), so a crafted file cannot run
    code. Pickles written by Python 2 (the released ones) are read with latin-1 strings.

    Returns:
        The dict with every tube as a float64 (n, 5) array sorted by frame, and every label of
        ``gttubes`` an int in ``0 .. len(labels) - 1``.

    Raises:
        FileNotFoundError: no file at ``path`` (with where to get it).
        GTPickleError: unreadable or refused file (a global outside numpy arrays / builtins),
            missing keys, or a tube that is not (n, 5) / has an unknown label; the message names
            the file and the key path.
    """
    try:
        with g_pathmgr.open(path, "rb") as f:
            gt = restricted_load(f, source=path, encoding="latin1")
    except FileNotFoundError:
        raise FileNotFoundError(f"ground-truth pickle {path} not found; see datasets/README.md") from None
    except UnsafePickleError as e:
        raise GTPickleError(str(e)) from None
    except ImportError as e:  # an admitted numpy global of another numpy major version
        raise GTPickleError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
    if not isinstance(gt, dict):
        raise GTPickleError(f"{path}: expected a dict at the top level, got {type(gt).__name__}")
    missing = [k for k in GT_KEYS if k not in gt]
    if missing:
        raise GTPickleError(f"{path}: missing key(s) {missing}")
    if not isinstance(gt["gttubes"], dict):
        raise GTPickleError(f"{path}: 'gttubes' must be a dict {{video: {{label: [tubes]}}}}")
    num_labels = len(gt["labels"])
    tubes_out = {
        video: _checked_video_tubes(path, video, per_label, num_labels) for video, per_label in gt["gttubes"].items()
    }
    gt = dict(gt)
    gt["gttubes"] = tubes_out
    for video in tubes_out:
        if video not in gt["resolution"] or video not in gt["nframes"]:
            raise GTPickleError(f"{path}: video {video!r} has tubes but no 'resolution'/'nframes' entry")
    return gt


def _checked_video_tubes(path: str, video: str, per_label, num_labels: int) -> Dict[int, List[np.ndarray]]:
    """``gttubes[video]`` checked: int labels in range, float64 (n, 5) finite tubes sorted by frame."""
    if not isinstance(per_label, dict):
        raise GTPickleError(f"{path}: gttubes[{video!r}] must be a dict {{label: [tubes]}}")
    out = {}
    for label, tubes in per_label.items():
        if not (isinstance(label, (int, np.integer)) and 0 <= int(label) < num_labels):
            raise GTPickleError(f"{path}: gttubes[{video!r}] has label {label!r} outside 0..{num_labels - 1}")
        checked = []
        for i, tube in enumerate(tubes):
            arr = np.asarray(tube, dtype=np.float64)
            if arr.ndim != 2 or arr.shape[1] != 5 or len(arr) == 0:
                raise GTPickleError(
                    f"{path}: gttubes[{video!r}][{label}][{i}] must be an (n, 5) array "
                    f"(frame, x1, y1, x2, y2), got shape {arr.shape}"
                )
            if not np.isfinite(arr).all():
                raise GTPickleError(f"{path}: gttubes[{video!r}][{label}][{i}] has non-finite values")
            checked.append(arr[np.argsort(arr[:, 0], kind="stable")])
        out[int(label)] = checked
    return out


def split_videos(gt: Dict, split: str, split_index: int, *, source: str = "ground truth") -> List[str]:
    """Videos of ``gt["<split>_videos"][split_index]`` (``split`` "train" or "test", 0-based index).

    Raises:
        ValueError: ``split`` is neither "train" nor "test".
        GTPickleError: ``gt`` has no such list or split; the message starts with ``source``
            (the pickle's path).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    lists = gt.get(f"{split}_videos")
    if lists is None:
        raise GTPickleError(f"{source}: no '{split}_videos'")
    if not 0 <= split_index < len(lists):
        raise GTPickleError(
            f"{source}: {split} split index {split_index} out of range ({split}_videos has {len(lists)} splits)"
        )
    return list(lists[split_index])


def test_videos(gt: Dict, split: int = 1) -> List[str]:
    """Test videos of a 1-based split (``test_videos[split - 1]``, as ACT's ``--split`` indexes them)."""
    return split_videos(gt, "test", split - 1)
