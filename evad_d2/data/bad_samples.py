"""Skipping bad training samples (``DATASETS.AVA.SKIP_BAD_SAMPLES``), counted and reported.

A bad sample is one whose frames cannot be read, at either of two stages:

* dataset load (``load_ava_dataset``): a video that is missing or does not open, a frame folder
  that is missing, empty or has a gap in its numbering, an unreadable first frame, a timestamp
  outside its video. The keyframes of such a video are dropped; each drop is logged.
* clip reading (``ClipDatasetMapper``): a decoding error, a truncated video, a missing or corrupt
  frame image, frames of another size than the dataset says. The mapper returns None and
  :class:`RetryMapDataset` draws another sample; each skip is logged and counted in a counter
  shared by the data-loader workers.

:class:`BadSampleSummary` logs the counts at the end of every epoch and of training. When every
sample is bad, training stops with an error that says so (at load, or once every sample of the
dataset failed to read). Evaluation never skips: a keyframe missing from it would change the metric.

Everything is logged through the ``evad_d2`` logger (``train_net.py`` sends it to the console and
``OUTPUT_DIR/log.txt``).
"""
import contextlib
import logging
import math
import random
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional

import torch
import torch.utils.data as torchdata
from detectron2.data.common import DatasetFromList
from detectron2.engine import HookBase

__all__ = [
    "BadSampleCounter",
    "LoadSkips",
    "skip_bad_samples_at_load",
    "current_load_skips",
    "RetryMapDataset",
    "BadSampleSummary",
]

logger = logging.getLogger(__name__)


class BadSampleCounter:
    """Number of samples skipped while reading clips, shared by the process that creates it and the
    data-loader workers it forks or spawns.

    A shared-memory int64 tensor with one slot per process (the creating process, then each loader
    worker by its id), so that no two processes ever write the same number and no lock is needed
    (a multiprocessing lock cannot cross from a fork to a spawn context).
    """

    SLOTS = 1024

    def __init__(self):
        self._slots = torch.zeros(self.SLOTS, dtype=torch.int64).share_memory_()

    def add(self, n: int = 1) -> int:
        """Count ``n`` more skips in this process's slot; returns the new total."""
        worker = torchdata.get_worker_info()
        slot = 0 if worker is None else 1 + worker.id % (self.SLOTS - 1)
        self._slots[slot] += n
        return self.total

    @property
    def total(self) -> int:
        return int(self._slots.sum())


@dataclass
class LoadSkips:
    """How many keyframes were dropped as bad while datasets were loaded (each one is logged,
    with its file, line and reason, where it is dropped)."""

    total: int = 0

    def add(self, keyframes: int) -> None:
        self.total += keyframes


_load_skips: List[LoadSkips] = []


@contextlib.contextmanager
def skip_bad_samples_at_load(enabled: bool = True) -> Iterator[Optional[LoadSkips]]:
    """While active, ``load_ava_dataset`` (called with ``skip_bad_videos=None``, as registered
    datasets are) drops the keyframes of bad videos instead of raising, and records them in the
    yielded :class:`LoadSkips`. ``enabled=False`` yields None and changes nothing, so a caller can
    pass ``cfg.DATASETS.AVA.SKIP_BAD_SAMPLES`` straight in."""
    if not enabled:
        yield None
        return
    skips = LoadSkips()
    _load_skips.append(skips)
    try:
        yield skips
    finally:
        _load_skips.remove(skips)


def current_load_skips() -> Optional[LoadSkips]:
    """The innermost active :func:`skip_bad_samples_at_load` record, or None."""
    return _load_skips[-1] if _load_skips else None


class RetryMapDataset(torchdata.Dataset):
    """``map_func`` over a list of dataset dicts; where it returns None (a skipped bad sample),
    another sample is drawn at random from those not yet found bad in this process, as detectron2's
    ``MapDataset`` does, but once every sample has failed it raises an error that says so (instead
    of ``random.sample``'s "Sample larger than population")."""

    def __init__(self, dataset: List[dict], map_func: Callable[[dict], Optional[dict]], *, seed: int = 42):
        # Serialised as detectron2's loaders keep it, so forked workers do not copy it page by page.
        self._dataset = DatasetFromList(dataset, copy=False) if isinstance(dataset, list) else dataset
        self._map_func = map_func
        self._rng = random.Random(seed)
        self._good = set(range(len(dataset)))

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, idx: int) -> dict:
        cur = int(idx)
        while True:
            data = self._map_func(self._dataset[cur])
            if data is not None:
                self._good.add(cur)
                return data
            self._good.discard(cur)
            if not self._good:
                raise RuntimeError(
                    f"every one of the {len(self._dataset)} training samples failed to read and was skipped as bad "
                    "(DATASETS.AVA.SKIP_BAD_SAMPLES True); the warnings before this name each file and error. "
                    "Check the data with `python -m evad_d2.data.validate --dataset-root ROOT`."
                )
            cur = self._rng.choice(list(self._good))  # a set of ints iterates in a fixed order


class BadSampleSummary(HookBase):
    """Logs how many samples were skipped as bad: at the end of every epoch and of training.

    Args:
        counter: the training mapper's :class:`BadSampleCounter` (clip-reading skips).
        iters_per_epoch: iterations per epoch (ceil(samples / batch size)).
        load_skips: keyframes dropped at dataset load, or None.

    Clip counts at an epoch's end include what the loader workers have read ahead.
    """

    def __init__(self, counter: BadSampleCounter, iters_per_epoch: int, load_skips: Optional[LoadSkips] = None):
        if iters_per_epoch < 1:
            raise ValueError(f"iters_per_epoch must be >= 1, got {iters_per_epoch}")
        self.counter = counter
        self.iters_per_epoch = int(iters_per_epoch)
        self.load_skips = load_skips
        self._at_last_summary = None

    @staticmethod
    def iters_per_epoch_for(num_samples: int, batch_size: int) -> int:
        return max(1, math.ceil(num_samples / batch_size))

    def summary(self, label: str) -> str:
        """One line: clips skipped since the previous summary and in all, keyframes dropped at load."""
        total = self.counter.total
        since = total - (self._at_last_summary or 0)
        self._at_last_summary = total
        loaded = self.load_skips.total if self.load_skips is not None else 0
        return (
            f"Bad samples, {label}: {since} clip(s) skipped as unreadable, {total} in all; "
            f"{loaded} keyframe(s) dropped at dataset load"
        )

    def before_train(self):
        self._at_last_summary = self.counter.total

    def after_step(self):
        done = self.trainer.iter + 1
        if done % self.iters_per_epoch == 0:
            logger.info(self.summary(f"epoch {done // self.iters_per_epoch} (iteration {done})"))

    def after_train(self):
        # detectron2's trainer leaves ``iter`` at the number of iterations run once training ends.
        logger.info(self.summary(f"end of training (iteration {self.trainer.iter})"))
