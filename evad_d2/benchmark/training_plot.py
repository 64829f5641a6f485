"""The training-cost picture (paper Fig. 8): step time and memory by keep rate, from the rows of
``tools/benchmark.py --part model --mode train`` (``--plot PNG``)."""
from typing import List, Sequence

from evad_d2.utils.atomic_io import atomic_write

__all__ = ["plot_training_cost", "ratio_labels"]

# (row field, legend) of the memory panel, drawn when the rows have them.
MEMORY_CURVES = (("activation_mb", "activations (saved for backward)"), ("peak_memory_mb", "peak memory"))


def ratio_labels(values: Sequence[float]) -> List[str]:
    """Each value as a fraction of the first (the reference rate's), e.g. ``0.62x``."""
    ref = values[0]
    return [f"{v / ref:.2f}x" if ref else "" for v in values]


def plot_training_cost(rows: List[dict], path: str, title: str = "") -> str:
    """Two panels against the keep rate: ``step_ms`` and the memory fields (MiB), each point
    labelled with its ratio to the first row's; PNG written atomically.

    Args:
        rows: training-benchmark rows (``keep_rate``, ``step_ms``; ``activation_mb`` and
            ``peak_memory_mb`` where measured), reference rate first.
        path: the PNG.
        title: figure title (e.g. the model, size and machine).

    Returns:
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not rows or any("keep_rate" not in r or "step_ms" not in r for r in rows):
        raise ValueError("the training-cost plot needs rows of the training benchmark (keep_rate, step_ms)")
    rates = [r["keep_rate"] for r in rows]
    fig = Figure(figsize=(9.0, 3.8))
    FigureCanvasAgg(fig)
    panels = [("step time (ms)", [("step_ms", "training step")])]
    curves = [(k, name) for k, name in MEMORY_CURVES if all(k in r for r in rows)]
    if curves:
        panels.append(("memory (MiB)", curves))
    for i, (ylabel, fields) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for key, name in fields:
            values = [r[key] for r in rows]
            line = ax.plot(rates, values, marker="o", label=name)[0]
            for x, y, text in zip(rates, values, ratio_labels(values)):
                ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=line.get_color())
        ax.set_xlabel("keep rate")
        ax.set_ylabel(ylabel)
        ax.invert_xaxis()  # from no pruning to the most pruning, as the paper's figure
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    return path
