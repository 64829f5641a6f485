"""Per-class AP bar chart written next to the metrics (matplotlib, Agg backend: no display needed)."""
import math
from typing import Dict, Optional

from iopath.common.file_io import g_pathmgr

__all__ = ["plot_per_class_ap"]


def plot_per_class_ap(per_class_ap: Dict[str, float], path: str, *, title: Optional[str] = None) -> str:
    """Save a horizontal bar chart of per-class AP (percent), classes sorted by AP.

    Args:
        per_class_ap: ``{class name: AP in percent}``; NaN entries (no ground truth) are left out.
        path: output PNG.
        title: figure title (e.g. the mAP).

    Returns:
        ``path``.
    """
    # A bare Figure on the Agg canvas: no pyplot state, works without a display whatever the
    # process-wide backend is.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    items = sorted(((n, v) for n, v in per_class_ap.items() if not math.isnan(v)), key=lambda kv: kv[1])
    height = max(2.5, 0.22 * len(items) + 1.2)
    fig = Figure(figsize=(8, height))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    names = [n for n, _ in items]
    values = [v for _, v in items]
    ax.barh(range(len(items)), values, color="tab:blue")
    ax.set_yticks(range(len(items)))
    ax.set_yticklabels(names, fontsize=7)
    ax.set_xlim(0, 100)
    ax.set_xlabel("AP (%)")
    for i, v in enumerate(values):
        ax.text(min(v + 1, 92), i, f"{v:.1f}", va="center", fontsize=6)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    with g_pathmgr.open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    return path
