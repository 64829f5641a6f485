"""Test-session settings.

One intra-op thread: the tests run tiny models whose ops do not parallelise, and on a 2-core
machine with anything else running, a second torch thread makes them 10x slower (measured).
"""
import os
import subprocess
import sys

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def predictor():
    """An ``EVADPredictor`` of the tiny test config (``evad_d2.testing.tiny_cfg``, every proposal
    kept), random weights drawn with seed 0; one per test module."""
    from evad_d2.engine.predictor import EVADPredictor
    from evad_d2.testing import tiny_cfg

    torch.manual_seed(0)
    return EVADPredictor(tiny_cfg(keep_all_proposals=True))


@pytest.fixture(scope="session")
def generated(tmp_path_factory):
    """``(dataset root, video)``: one 5 s 160x120 video of the AVA-like generator (timestamps
    902..903 annotated)."""
    out = tmp_path_factory.mktemp("ava_like")
    generator = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "datasets", "generate_ava_like.py")
    subprocess.run(
        [
            sys.executable, generator, "--out", str(out), "--seed", "5", "--num-train-videos", "0",
            "--num-val-videos", "1", "--duration", "5", "--quiet",
        ],
        check=True,
    )
    return out, out / "videos" / "val_005_0000.mp4"
