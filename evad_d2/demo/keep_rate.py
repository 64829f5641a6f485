"""A keep rate for a latency budget: the measured table and the run-time controller.

EVAD's keep rate rho (paper 3.2) trades accuracy for speed without retraining: the pruning blocks
of the config (``MODEL.EVAD.KEEP_RATES`` < 1) keep ``rho`` of their tokens
(:func:`~evad_d2.modeling.backbone.scaled_keep_rates`), and the paper's Fig. 5 shows that
accuracy falls slowly as rho falls. Here:

* :func:`measure_keep_rate_table` times the predictor at several keep rates on this device
  (1.0 down to a floor, interleaved repetitions, median) into a :class:`KeepRateTable`
  (keep rate, GFLOPs, latency, clips/s), which :func:`save_keep_rate_table` writes as JSON
  (``tools/calibrate_keep_rate.py``), :func:`load_keep_rate_table` reads back and
  :func:`plot_keep_rate_table` draws;
* :meth:`KeepRateTable.choose` picks the highest keep rate whose measured time fits a budget;
* :class:`KeepRateController` (built for a predictor by :func:`keep_rate_controller`) adjusts it between keyframes when the measured model time drifts
  from the table's (hysteresis, never below the user's floor) and logs each change.

The keep rate is changed through the backbone contract's public ``set_keep_rates``
(:func:`set_model_keep_rate`).
"""
import json
import logging
import math
import os
import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..modeling.backbone import scaled_keep_rates
from ..utils.atomic_io import atomic_write

__all__ = [
    "CALIBRATION_MIN_KEEP_RATE",
    "CALIBRATION_REPEATS",
    "CALIBRATION_WARMUP",
    "DEFAULT_MIN_KEEP_RATE",
    "KEEP_RATE_TABLE_FORMAT",
    "KeepRateController",
    "KeepRateTable",
    "KeepRateTableError",
    "calibrate_keep_rate",
    "keep_rate_controller",
    "keep_rate_grid",
    "latency_budget",
    "load_keep_rate_table",
    "measure_keep_rate_table",
    "plot_keep_rate_table",
    "save_keep_rate_table",
    "set_model_keep_rate",
]

logger = logging.getLogger(__name__)

#: Lowest keep rate a latency budget may choose (``--min-keep-rate``): the paper's Table 2 (ViT-B,
#: AVA) measures mAP within 0.5 of rho = 1.0 down to 0.6.
DEFAULT_MIN_KEEP_RATE = 0.6
#: Lowest keep rate, timed and untimed runs per keep rate of ``tools/calibrate_keep_rate.py``.
CALIBRATION_MIN_KEEP_RATE, CALIBRATION_REPEATS, CALIBRATION_WARMUP = 0.5, 5, 2
#: The ``format`` field of a keep-rate table file.
KEEP_RATE_TABLE_FORMAT = "evad_d2.keep_rate_table/1"
# The fields of every row of a table (gflops may be null: not counted).
_ROW_FIELDS = ("keep_rate", "gflops", "latency_ms", "clips_per_s")


class KeepRateTableError(ValueError):
    """A keep-rate table file that cannot be used; the message names the file and the key."""


def keep_rate_grid(floor: float, step: float = 0.1) -> List[float]:
    """Keep rates 1.0, 1.0 - step, ... down to ``floor`` (included), highest first.

    Raises:
        ValueError: ``floor`` outside (0, 1] or ``step`` not positive.
    """
    if not 0.0 < floor <= 1.0:
        raise ValueError(f"the keep-rate floor must be in (0, 1], got {floor}")
    if not step > 0:
        raise ValueError(f"the keep-rate step must be positive, got {step}")
    rates, k = [], 0
    while round(1.0 - k * step, 6) >= floor - 1e-9:
        rates.append(round(1.0 - k * step, 6))
        k += 1
    if rates[-1] > floor + 1e-9:
        rates.append(float(floor))
    return rates


def latency_budget(latency_ms: Optional[float] = None, target_fps: Optional[float] = None) -> Optional[float]:
    """Seconds the model may take per keyframe: ``latency_ms`` / 1000, or 1 / ``target_fps``
    keyframes per second, the tighter of the two when both are given; None when neither is.

    Raises:
        ValueError: a budget that is not positive.
    """
    budgets = []
    if latency_ms is not None:
        if not latency_ms > 0:
            raise ValueError(f"--latency-ms must be positive, got {latency_ms}")
        budgets.append(latency_ms / 1000.0)
    if target_fps is not None:
        if not target_fps > 0:
            raise ValueError(f"--target-fps must be positive, got {target_fps}")
        budgets.append(1.0 / target_fps)
    return min(budgets) if budgets else None


def set_model_keep_rate(model, base_keep_rates: Sequence[float], keep_rate: float) -> None:
    """Give the pruning blocks of ``base_keep_rates`` the keep rate ``keep_rate`` through the
    backbone's public ``set_keep_rates`` (the backbone contract); the other blocks keep 1."""
    model.backbone.set_keep_rates(scaled_keep_rates(base_keep_rates, keep_rate))


@dataclass
class KeepRateTable:
    """Measured cost of the model per keep rate on one device.

    Attributes:
        rows: ``{"keep_rate", "gflops" (None: not counted), "latency_ms", "clips_per_s"}`` per
            keep rate, highest keep rate first.
        device: the machine, in words (e.g. "CPU (2 threads, 2 cores)").
        input_size: (T, H, W) of the timed clips (as decoded, before the test-time resize).
        meta: anything else stored with the table (config file, torch version, repeats).
    """

    rows: List[Dict]
    device: str = ""
    input_size: Tuple[int, int, int] = (0, 0, 0)
    meta: Dict = field(default_factory=dict)

    def __post_init__(self):
        self.rows = sorted(self.rows, key=lambda r: -r["keep_rate"])

    @property
    def keep_rates(self) -> List[float]:
        """The measured keep rates, highest first."""
        return [r["keep_rate"] for r in self.rows]

    def latency_s(self, keep_rate: float) -> float:
        """Measured seconds per clip at ``keep_rate`` (one of :attr:`keep_rates`)."""
        for r in self.rows:
            if math.isclose(r["keep_rate"], keep_rate):
                return r["latency_ms"] / 1000.0
        raise KeyError(f"keep rate {keep_rate} was not measured (table has {self.keep_rates})")

    def choose(self, budget_s: float, floor: float = 0.0) -> float:
        """The highest keep rate >= ``floor`` whose measured time is within ``budget_s``; when
        none is, the lowest one >= ``floor`` (with a warning).

        Raises:
            ValueError: no measured keep rate is >= ``floor``.
        """
        rates = [r for r in self.keep_rates if r >= floor - 1e-9]
        if not rates:
            raise ValueError(f"no measured keep rate is at or above the floor {floor} (table has {self.keep_rates})")
        for r in rates:
            if self.latency_s(r) <= budget_s:
                return r
        logger.warning(
            f"no keep rate >= {floor} fits the budget of {budget_s * 1000:.1f} ms per keyframe "
            f"(keep rate {rates[-1]} takes {self.latency_s(rates[-1]) * 1000:.1f} ms); using {rates[-1]}"
        )
        return rates[-1]

    def to_json(self) -> Dict:
        """The file layout of :func:`save_keep_rate_table`."""
        return {
            "format": KEEP_RATE_TABLE_FORMAT, "device": self.device, "input_size": list(self.input_size),
            "meta": self.meta, "rows": [{k: r[k] for k in _ROW_FIELDS} for r in self.rows],
        }


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def measure_keep_rate_table(
    predictor,
    keep_rates: Sequence[float],
    frame_size: Optional[Tuple[int, int]] = None,
    *,
    repeats: int = 3,
    warmup: int = 1,
    flops: bool = True,
    clock: Callable[[], float] = time.perf_counter,
) -> KeepRateTable:
    """Time ``predictor.predict_batch`` on one random uint8 clip at each keep rate.

    Repetitions are interleaved over the keep rates (drift of a busy machine hits all alike);
    each row holds the median. The model's keep rates are restored afterwards.

    Args:
        predictor: an :class:`~evad_d2.engine.EVADPredictor` (its ``model``, ``cfg``,
            ``num_frames``).
        keep_rates: rho values for the config's pruning blocks (e.g. :func:`keep_rate_grid`).
        frame_size: (H, W) of the decoded frames (None: a square of ``INPUT.MIN_SIZE_TEST``).
        repeats, warmup: timed and untimed runs per keep rate.
        flops: count the method's GFLOPs per keep rate too (fvcore).
        clock: seconds now (injectable for tests).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    cfg, model = predictor.cfg, predictor.model
    base = list(cfg.MODEL.EVAD.KEEP_RATES)
    h, w = frame_size or (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST)
    clip = np.random.default_rng(0).integers(0, 256, size=(predictor.num_frames, h, w, 3), dtype=np.uint8)
    device, saved = str(cfg.MODEL.DEVICE), list(model.backbone.keep_rates)
    times: Dict[float, List[float]] = {float(r): [] for r in keep_rates}
    try:
        for rep in range(warmup + repeats):
            for rho in times:
                set_model_keep_rate(model, base, rho)
                _sync(device)
                t0 = clock()
                predictor.predict_batch([clip])
                _sync(device)
                if rep >= warmup:
                    times[rho].append(clock() - t0)
        rows = []
        for rho, seconds in times.items():
            med = statistics.median(seconds)
            row = {"keep_rate": rho, "gflops": None, "latency_ms": med * 1000.0, "clips_per_s": 1.0 / max(med, 1e-12)}
            if flops:
                set_model_keep_rate(model, base, rho)
                row["gflops"] = _gflops(model, predictor.preprocess(clip))
            rows.append(row)
    finally:
        model.backbone.set_keep_rates(saved)
    meta = {"repeats": repeats, "warmup": warmup, "torch": torch.__version__, "base_keep_rates": base}
    return KeepRateTable(rows, _machine(device), (predictor.num_frames, h, w), meta)


def _gflops(model, model_input: Dict) -> float:
    from ..benchmark.inference import model_gflops  # fvcore tracing: only when GFLOPs are asked for

    model_input = dict(model_input, clip=model_input["clip"].to(next(model.parameters()).device))
    return model_gflops(model, [model_input])["gflops"]


def _machine(device: str) -> str:
    from ..benchmark.timing import machine_description

    return machine_description(device)


def save_keep_rate_table(table: KeepRateTable, path: str) -> None:
    """Write ``table`` as JSON at ``path`` atomically (its folder is created)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path, "w") as f:
        json.dump(table.to_json(), f, indent=2)
        f.write("\n")


def load_keep_rate_table(path: str) -> KeepRateTable:
    """Read a table written by :func:`save_keep_rate_table` (``tools/calibrate_keep_rate.py``).

    Raises:
        KeepRateTableError: naming ``path`` and the key, for a missing or malformed file.
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KeepRateTableError(f"{path}: cannot read the keep-rate table: {e}") from None
    if not isinstance(data, dict) or data.get("format") != KEEP_RATE_TABLE_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise KeepRateTableError(
            f"{path}: 'format' is {found!r}, expected {KEEP_RATE_TABLE_FORMAT!r}; "
            "write the table with tools/calibrate_keep_rate.py"
        )
    rows = data.get("rows")
    if not isinstance(rows, list) or not rows:
        raise KeepRateTableError(f"{path}: 'rows' must be a non-empty list of measured keep rates")
    for i, row in enumerate(rows):
        _check_row(path, i, row)
    size = data.get("input_size", [0, 0, 0])
    return KeepRateTable([dict(r) for r in rows], str(data.get("device", "")), tuple(size), dict(data.get("meta", {})))


def _check_row(path: str, i: int, row) -> None:
    if not isinstance(row, dict):
        raise KeepRateTableError(f"{path}: rows[{i}] must be an object with {', '.join(_ROW_FIELDS)}")
    for key in _ROW_FIELDS:
        value = row.get(key)
        if key == "gflops" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise KeepRateTableError(f"{path}: rows[{i}].{key} must be a positive number, got {value!r}")
    if row["keep_rate"] > 1.0:
        raise KeepRateTableError(f"{path}: rows[{i}].keep_rate = {row['keep_rate']} is outside (0, 1]")


def plot_keep_rate_table(table: KeepRateTable, path: str) -> None:
    """A PNG at ``path``: latency (left axis) and GFLOPs (right axis, if counted) by keep rate."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    rates = table.keep_rates
    ax.plot(rates, [r["latency_ms"] for r in table.rows], "o-", color="tab:blue", label="latency")
    ax.set_xlabel("keep rate")
    ax.set_ylabel("latency per clip (ms)", color="tab:blue")
    ax.invert_xaxis()
    if all(r["gflops"] is not None for r in table.rows):
        ax2 = ax.twinx()
        ax2.plot(rates, [r["gflops"] for r in table.rows], "s--", color="tab:orange")
        ax2.set_ylabel("GFLOPs per clip", color="tab:orange")
    t, h, w = table.input_size
    ax.set_title(f"EVAD keep rate on {table.device}, clip {t}x{h}x{w}", fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path) as f:
        fig.savefig(f, format="png")


class KeepRateController:
    """Keeps the model's keep rate at the highest one whose time fits ``budget_s``.

    At start the keep rate is :meth:`KeepRateTable.choose` of the budget. After each keyframe
    :meth:`observe` takes the measured model time; once ``window`` times at the current keep
    rate are in, their median m is compared with the table: the drift ``d = m / table(current)``
    scales the whole table (the machine got busier or quieter). Then

    * m > budget: go down to the highest lower keep rate with ``d * table(rate) <= budget``
      (the lowest one >= ``floor`` when none fits);
    * m <= budget: go up to the highest higher keep rate with
      ``d * table(rate) <= budget * (1 - hysteresis)``, if any.

    A keep rate left for being too slow is not returned to (nor any higher one) for ``backoff``
    keyframes, twice as long each further time: a noisy table or machine cannot make the keep
    rate swing back and forth. After a change the window starts afresh. Each change is logged and
    kept in :attr:`changes`.

    Args:
        table: measured latency per keep rate.
        budget_s: seconds the model may take per keyframe.
        apply: called with each new keep rate (e.g. :func:`set_model_keep_rate` bound to a model),
            also with the initial one.
        floor: lowest keep rate allowed.
        hysteresis: fraction of the budget a higher keep rate must leave free.
        window: measured times whose median decides.
        backoff: keyframes a keep rate that was too slow stays out of reach, the first time.
    """

    def __init__(
        self, table: KeepRateTable, budget_s: float, apply: Callable[[float], None], *,
        floor: float = 0.0, hysteresis: float = 0.1, window: int = 3, backoff: int = 10,
    ):
        if not budget_s > 0:
            raise ValueError(f"the latency budget must be positive, got {budget_s} s")
        if not 0.0 <= hysteresis < 1.0 or window < 1:
            raise ValueError(f"hysteresis must be in [0, 1) and window >= 1, got {hysteresis} and {window}")
        self.table, self.budget_s, self.apply = table, float(budget_s), apply
        self.floor, self.hysteresis = float(floor), float(hysteresis)
        self.rates = [r for r in table.keep_rates if r >= self.floor - 1e-9]
        self.keep_rate = table.choose(self.budget_s, self.floor)
        self.recent: deque = deque(maxlen=window)
        self.changes: List[Dict] = []
        self.backoff, self.observations = int(backoff), 0
        self.failures: Dict[float, int] = {}  # times each keep rate was left for being too slow
        self.blocked_until: Dict[float, int] = {}  # keep rate -> observation count it is blocked until
        logger.info(
            f"keep rate {self.keep_rate} for a budget of {self.budget_s * 1000:.1f} ms per keyframe "
            f"(measured {table.latency_s(self.keep_rate) * 1000:.1f} ms; floor {self.floor})"
        )
        apply(self.keep_rate)

    def observe(self, model_seconds: float) -> Optional[Dict]:
        """Take one keyframe's measured model time; change the keep rate if it drifted.

        Returns:
            ``{"from", "to", "observed_ms", "predicted_ms", "budget_ms"}`` when it changed, else None.
        """
        self.recent.append(float(model_seconds))
        self.observations += 1
        if len(self.recent) < self.recent.maxlen:
            return None
        observed = statistics.median(self.recent)
        drift = observed / self.table.latency_s(self.keep_rate)
        target = self._target(observed, drift)
        if target is None or math.isclose(target, self.keep_rate):
            return None
        change = {
            "from": self.keep_rate, "to": target, "observed_ms": observed * 1000.0,
            "predicted_ms": drift * self.table.latency_s(target) * 1000.0, "budget_ms": self.budget_s * 1000.0,
        }
        logger.info(
            f"keep rate {change['from']} -> {target}: model took {change['observed_ms']:.1f} ms (median of "
            f"{len(self.recent)}), budget {change['budget_ms']:.1f} ms, expected {change['predicted_ms']:.1f} ms"
        )
        if target < self.keep_rate:  # too slow: keep away from this keep rate for a while
            n = self.failures[self.keep_rate] = self.failures.get(self.keep_rate, 0) + 1
            self.blocked_until[self.keep_rate] = self.observations + self.backoff * 2 ** min(n - 1, 10)
        self.keep_rate = target
        self.recent.clear()
        self.changes.append(change)
        self.apply(target)
        return change

    def _target(self, observed: float, drift: float) -> Optional[float]:
        current = self.keep_rate
        if observed > self.budget_s:
            lower = [r for r in self.rates if r < current]
            fits = [r for r in lower if drift * self.table.latency_s(r) <= self.budget_s]
            return fits[0] if fits else (lower[-1] if lower else None)
        room = self.budget_s * (1.0 - self.hysteresis)
        blocked = [r for r, until in self.blocked_until.items() if until > self.observations]
        ceiling = min(blocked) if blocked else math.inf  # neither it nor a higher keep rate
        higher = [r for r in self.rates if current < r < ceiling and drift * self.table.latency_s(r) <= room]
        return higher[0] if higher else None


def keep_rate_controller(
    predictor, budget_s: float, *, floor: float = DEFAULT_MIN_KEEP_RATE, table_path: Optional[str] = None,
    frame_size: Optional[Tuple[int, int]] = None,
) -> KeepRateController:
    """A controller of ``predictor``'s keep rate for ``budget_s`` seconds per keyframe: the table
    read from ``table_path`` (``tools/calibrate_keep_rate.py``), else measured now at
    :func:`keep_rate_grid` ``(floor)`` on ``frame_size`` (H, W) frames.

    Raises:
        KeepRateTableError: an unusable table file.
        ValueError: the config prunes nowhere (``MODEL.EVAD.KEEP_RATES`` all 1), or no keep rate
            of the table is at or above ``floor``.
    """
    base = list(predictor.cfg.MODEL.EVAD.KEEP_RATES)
    scaled_keep_rates(base, 1.0)  # raises, naming MODEL.EVAD.KEEP_RATES, when nothing can be pruned
    if table_path:
        table = load_keep_rate_table(table_path)
        stored = table.meta.get("base_keep_rates")
        if stored is not None and [float(r) for r in stored] != base:
            logger.warning(
                f"{table_path} was measured with MODEL.EVAD.KEEP_RATES {stored}, the model has {base}: "
                "its times may not fit; run tools/calibrate_keep_rate.py with this config"
            )
    else:
        logger.info(f"measuring the model at keep rates {keep_rate_grid(floor)} (budget {budget_s * 1000:.1f} ms)")
        table = measure_keep_rate_table(predictor, keep_rate_grid(floor), frame_size, flops=False)
    return KeepRateController(
        table, budget_s, lambda rho: set_model_keep_rate(predictor.model, base, rho), floor=floor
    )


def calibrate_keep_rate(
    config_file: str, opts: Sequence = (), *, output_dir: str, device: Optional[str] = None,
    floor: float = CALIBRATION_MIN_KEEP_RATE, step: float = 0.1, frame_size: Optional[Tuple[int, int]] = None,
    repeats: int = CALIBRATION_REPEATS, warmup: int = CALIBRATION_WARMUP,
) -> Tuple[KeepRateTable, str, str]:
    """Measure the config's model on this machine (``tools/calibrate_keep_rate.py``) and write
    ``keep_rate_table.json`` and ``keep_rate_table.png`` into ``output_dir``.

    Args:
        config_file, opts: the model (``opts``: KEY VALUE config overrides, e.g. MODEL.WEIGHTS).
        device: torch device (None: ``MODEL.DEVICE``).
        floor, step: keep rates 1.0, 1.0 - step, ... down to ``floor``.
        frame_size: (H, W) of the timed frames (None: a square of ``INPUT.MIN_SIZE_TEST``).
        repeats, warmup: timed and untimed runs per keep rate.

    Returns:
        (table, JSON path, PNG path).
    """
    from .video_demo import build_demo_predictor

    rates = keep_rate_grid(floor, step)  # bad floor or step: fail before building the model
    opts = list(opts) + (["MODEL.DEVICE", device] if device else [])
    predictor = build_demo_predictor(config_file, opts)
    table = measure_keep_rate_table(predictor, rates, frame_size, repeats=repeats, warmup=warmup, flops=True)
    table.meta.update(config_file=config_file, opts=[str(o) for o in opts])
    json_path = os.path.join(output_dir, "keep_rate_table.json")
    png_path = os.path.join(output_dir, "keep_rate_table.png")
    save_keep_rate_table(table, json_path)
    plot_keep_rate_table(table, png_path)
    return table, json_path, png_path
