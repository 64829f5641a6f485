"""Random-number-generator states as a checkpointable, so a resumed run draws the same numbers."""
import logging
import random

import numpy as np
import torch
from detectron2.engine import HookBase
from detectron2.utils import comm

__all__ = ["GatherRNGStates", "RNGState"]

logger = logging.getLogger(__name__)


class RNGState:
    """Saves/restores Python, NumPy and torch (CPU and CUDA) generators of every process.

    Everything is stored as tensors and plain Python values, so checkpoints stay loadable with
    ``torch.load(weights_only=True)``. Only the main process writes checkpoints; with several
    processes, every process first calls :meth:`gather` (the :class:`GatherRNGStates` hook does, on
    the iterations that save), so the checkpoint holds each process's own state under ``"ranks"``
    and each process continues its own streams after a resume.
    """

    def __init__(self):
        self._gathered = None

    @staticmethod
    def _local_state():
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {
            "python": random.getstate(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    @staticmethod
    def _load_local(state):
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])

    def gather(self) -> None:
        """Collective (every process calls it): the main process keeps all states for the next save."""
        states = comm.all_gather(self._local_state())
        self._gathered = states if comm.is_main_process() else None

    def state_dict(self):
        state = self._local_state()
        if comm.get_world_size() > 1:
            # The gathered states are those of now as long as this process has drawn nothing since.
            if self._gathered is None or not _same_state(self._gathered[0], state):
                logger.warning(
                    "saving the RNG state of the main process only (no gather right before this save): after a "
                    "resume, the other processes continue from the main process's streams, not their own"
                )
                return state
            state["ranks"] = self._gathered
        return state

    def load_state_dict(self, state):
        ranks = state.get("ranks")
        if ranks is None:
            self._load_local(state)
            return
        rank, world = comm.get_rank(), comm.get_world_size()
        if len(ranks) != world:
            logger.warning(
                "the checkpoint holds the RNG states of %d processes but %d run now: process %d continues the "
                "streams of process %d, so random draws differ from an uninterrupted run",
                len(ranks), world, rank, rank % len(ranks),
            )
        self._load_local(ranks[rank % len(ranks)])
        # A save right after this load (the final save redone by a resume at MAX_ITER) is of these
        # same states: keep them for it, as a gather would have.
        self._gathered = list(ranks) if comm.is_main_process() and len(ranks) == world else None


def _same_state(a, b) -> bool:
    na, nb = a["numpy"], b["numpy"]
    return (
        a["python"] == b["python"]
        and (na["pos"], na["has_gauss"], na["gauss"]) == (nb["pos"], nb["has_gauss"], nb["gauss"])
        and torch.equal(na["keys"], nb["keys"])
        and torch.equal(a["torch"], b["torch"])
    )


class GatherRNGStates(HookBase):
    """Gathers every process's RNG state before the main process's checkpointer saves it.

    Put it before the checkpointing hook; ``period`` is SOLVER.CHECKPOINT_PERIOD. Nothing draws
    random numbers between this hook and the save, so the saved states are those at the save.
    """

    def __init__(self, rng: RNGState, period: int):
        self._rng = rng
        self._period = period

    def after_step(self):
        it = self.trainer.iter
        if comm.get_world_size() > 1 and ((it + 1) % self._period == 0 or it + 1 >= self.trainer.max_iter):
            self._rng.gather()
