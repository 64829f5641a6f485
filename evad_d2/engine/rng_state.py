"""Random-number-generator states as a checkpointable, so a resumed run draws the same numbers."""
import random

import numpy as np
import torch

__all__ = ["RNGState"]


class RNGState:
    """Saves/restores Python, NumPy and torch (CPU and CUDA) generators of this process.

    Everything is stored as tensors and plain Python values, so checkpoints stay loadable with
    ``torch.load(weights_only=True)``. Only the main process writes checkpoints, so after a
    multi-process resume every process continues from the main process's state.
    """

    def state_dict(self):
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {
            "python": random.getstate(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state):
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
