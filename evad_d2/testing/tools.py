"""Runs of the repository's command-line scripts (see :mod:`evad_d2.testing`)."""
import os
import subprocess
import sys
from typing import Dict, Optional

from .models import REPO_ROOT

def run_tool(script: str, *args, env: Optional[Dict[str, str]] = None, timeout: Optional[float] = None
             ) -> subprocess.CompletedProcess:
    """``python SCRIPT ARGS`` in a subprocess from :data:`REPO_ROOT` (``script`` relative to it,
    e.g. ``"tools/demo.py"``), one OpenMP thread, text output captured; ``env`` adds variables."""
    return subprocess.run(
        [sys.executable, script, *map(str, args)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


def tool_output(script: str, *args, env: Optional[Dict[str, str]] = None) -> str:
    """:func:`run_tool`, asserting it exits 0 (the end of its stderr as the message); its stdout."""
    res = run_tool(script, *args, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout
