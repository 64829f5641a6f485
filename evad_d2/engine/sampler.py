"""A training sampler that can continue its index stream where a resumed run stopped."""
import itertools

from detectron2.data.samplers import TrainingSampler

__all__ = ["ResumableTrainingSampler"]


class ResumableTrainingSampler(TrainingSampler):
    """detectron2's infinite shuffled stream, started ``start`` samples in (per process).

    On resume the trainer sets ``start`` to the samples this process already consumed, so the
    run sees the same clips in the same order as an uninterrupted one.
    """

    def __init__(self, size: int, shuffle: bool = True, seed=None, start: int = 0):
        super().__init__(size, shuffle, seed)
        self.start = start

    def __iter__(self):
        first = self._rank + self.start * self._world_size
        yield from itertools.islice(self._infinite_indices(), first, None, self._world_size)
