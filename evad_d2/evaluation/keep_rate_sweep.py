"""Accuracy by keep rate, the paper's pruning rule against random dropping (paper Fig. 5;
``tools/sweep_keep_rate.py``).

:func:`sweep_keep_rates` evaluates one trained model on a registered dataset at several keep rates
(every pruning block of the config gets the rate, :func:`scaled_keep_rates`) with each pruning
rule of ``MODEL.EVAD.PRUNING_SCORE``, and counts each setting's GFLOPs per clip. Keep rate 1 prunes
nothing, so it is evaluated once and reported for every rule. :func:`combine_sweeps` pools the
sweeps of several trainings (seeds) into mean and spread; :func:`plot_sweep` draws frame-mAP
against GFLOPs, one line per (training, rule).

A sweep is a dict (the JSON :func:`write_sweep` writes)::

    {"kind": "keep_rate_sweep", "label": str, "dataset": str, "metric": "frame_mAP@0.5",
     "weights": str, "gflops_size": [T, H, W], "base_keep_rates": [...], "eval_random_seed": int,
     "device": str, "torch": str,
     "rows": [{"rule", "keep_rate", "pruned", "tokens", "gflops", "frame_map", "metrics"}, ...]}

and a combined summary ``{"kind": "keep_rate_sweep_summary", "dataset", "metric", "runs",
"rows": [{"label", "rule", "keep_rate", "gflops", "n", "frame_map_mean", "frame_map_std",
"frame_map_min", "frame_map_max", "frame_map_values"}, ...]}`` (std: sample standard deviation,
0 for one run).
"""
import json
import logging
import math
import os
from typing import Callable, Dict, List, Optional, Sequence

import torch

from evad_d2.modeling.backbone import PruningVideoViT, scaled_keep_rates
from evad_d2.modeling.backbone.pruning import PRUNING_SCORES
from evad_d2.utils.atomic_io import atomic_write

__all__ = [
    "DEFAULT_KEEP_RATES",
    "METRIC",
    "combine_sweeps",
    "load_sweep",
    "plot_sweep",
    "register_dataset_root",
    "sweep_keep_rates",
    "sweep_table",
    "write_sweep",
]

logger = logging.getLogger(__name__)

# The paper's Fig. 5 range.
DEFAULT_KEEP_RATES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
# The number both evaluators (AVA, UCF101-24 / JHMDB) report.
METRIC = "frame_mAP@0.5"
SWEEP_KIND = "keep_rate_sweep"
SUMMARY_KIND = "keep_rate_sweep_summary"
# The name an AVA-format folder given by path (``--dataset-root``) is registered under.
SWEEP_DATASET = "evad_keep_rate_sweep"


def register_dataset_root(root: str, split: str = "val", version: str = "2.2") -> str:
    """Register the AVA-format dataset at ``root`` (split ``split``) as :data:`SWEEP_DATASET` and return that name."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from evad_d2.data import register_ava

    if not os.path.isdir(root):
        raise ValueError(f"--dataset-root {root!r} is not a folder")

    if SWEEP_DATASET in DatasetCatalog.list():
        DatasetCatalog.remove(SWEEP_DATASET)
        MetadataCatalog.remove(SWEEP_DATASET)
    register_ava(SWEEP_DATASET, root, split, version, "auto")
    return SWEEP_DATASET


def pruning_vits(model) -> List[PruningVideoViT]:
    """The model's pruning ViTs (the sweep switches their rule); raises if it has none."""
    vits = [m for m in model.modules() if isinstance(m, PruningVideoViT)]
    if not vits:
        raise ValueError(
            f"the keep-rate sweep switches the pruning rule of a PruningVideoViT, and this model "
            f"({type(model).__name__}, backbone {type(getattr(model, 'backbone', None)).__name__}) has none"
        )
    return vits


def check_dataset(name: str) -> None:
    """Raise a ValueError naming the registered datasets unless ``name`` is one."""
    from detectron2.data import DatasetCatalog

    if name not in DatasetCatalog.list():
        known = ", ".join(sorted(DatasetCatalog.list()))
        raise ValueError(f"dataset {name!r} is not registered (pass --dataset NAME, one of: {known})")


def check_weights(cfg) -> str:
    """MODEL.WEIGHTS, which must name an existing file or folder (the sweep evaluates a trained model)."""
    path = cfg.MODEL.WEIGHTS
    if not path:
        raise ValueError("MODEL.WEIGHTS is empty: the keep-rate sweep evaluates a trained model (MODEL.WEIGHTS path/to/model_final.pth)")
    if not os.path.exists(path):
        raise ValueError(f"MODEL.WEIGHTS {path!r} does not exist")
    return path


def frame_map_of(results: dict, dataset: str) -> Dict[str, float]:
    """The one task's metrics of an evaluation's ``{task: {metric: value}}``; raises without :data:`METRIC`."""
    for metrics in results.values():
        if isinstance(metrics, dict) and METRIC in metrics:
            return dict(metrics)
    raise RuntimeError(f"the evaluation of {dataset!r} reported no {METRIC} (results: {results!r}); did the model detect nothing?")


def _evaluate(model, cfg, loader, dataset: str, output_folder: Optional[str]) -> Dict[str, float]:
    from detectron2.evaluation import inference_on_dataset

    from evad_d2.engine.trainer import EVADTrainer

    evaluator = EVADTrainer.build_evaluator(cfg, dataset, output_folder)
    return frame_map_of(inference_on_dataset(model, loader, evaluator), dataset)


def _gflops(model, size: Sequence[int]) -> float:
    from evad_d2.benchmark.analysis import count_gflops

    return count_gflops(model, size)["total"]


def sweep_keep_rates(
    cfg,
    *,
    dataset_name: Optional[str] = None,
    keep_rates: Sequence[float] = DEFAULT_KEEP_RATES,
    rules: Sequence[str] = PRUNING_SCORES,
    gflops_size: Optional[Sequence[int]] = None,
    output_dir: Optional[str] = None,
    label: Optional[str] = None,
    log: Callable[[str], None] = logger.info,
) -> dict:
    """Evaluate MODEL.WEIGHTS at each keep rate with each pruning rule.

    Args:
        cfg: the model's config (checked; the one it was trained with, overrides included).
        dataset_name: a registered dataset (default: ``DATASETS.TEST[0]``).
        keep_rates: rates in (0, 1] given to the config's pruning blocks.
        rules: pruning rules, from ``PRUNING_SCORES``.
        gflops_size: (T, H, W) clip the GFLOPs are counted on (default: INPUT.NUM_FRAMES and
            MIN_SIZE_TEST square, padded as the model pads its input: to the backbone's
            ``size_divisibility``).
        output_dir: the evaluators write their files under ``output_dir/eval/<rule>_rho<rate>``
            (None: nowhere).
        label: the sweep's name in combined tables (default: ``trained: <MODEL.EVAD.PRUNING_SCORE>``).
        log: progress lines.

    Returns:
        the sweep dict (see the module docstring), rows in ``rules`` x ``keep_rates`` order.
    """
    from detectron2.modeling import build_model

    from evad_d2.benchmark.inference import network_input
    from evad_d2.benchmark.timing import machine_description
    from evad_d2.checkpoint import EVADCheckpointer
    from evad_d2.engine.trainer import EVADTrainer

    dataset = dataset_name or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "")
    check_dataset(dataset)
    weights = check_weights(cfg)
    for rule in rules:
        if rule not in PRUNING_SCORES:
            raise ValueError(f"pruning rule {rule!r} is not one of {PRUNING_SCORES}")
    for rho in keep_rates:
        if not 0.0 < float(rho) <= 1.0:
            raise ValueError(f"keep rate {rho} is outside (0, 1]")
    base = list(cfg.MODEL.EVAD.KEEP_RATES)
    model = build_model(cfg).eval()
    if gflops_size:
        size = list(gflops_size)
    else:  # the square test clip as the network sees it, padded by the model itself
        side = int(cfg.INPUT.MIN_SIZE_TEST)
        size = network_input(model, [{"clip": torch.zeros(3, int(cfg.INPUT.NUM_FRAMES), side, side)}])[0]
    EVADCheckpointer(model).load(weights)
    vits = pruning_vits(model)
    trained_rule = vits[0].pruning_score
    loader = EVADTrainer.build_test_loader(cfg, dataset)
    rows, unpruned = [], None
    try:
        for rule in rules:
            for vit in vits:
                vit.set_pruning_score(rule)
            for rho in keep_rates:
                rates = scaled_keep_rates(base, float(rho))
                model.set_keep_rates(rates)
                pruned = any(r < 1.0 for r in rates)
                if pruned or unpruned is None:
                    folder = os.path.join(output_dir, "eval", f"{rule}_rho{float(rho):g}") if output_dir else None
                    gflops = _gflops(model, size)
                    metrics = _evaluate(model, cfg, loader, dataset, folder)
                    if not pruned:
                        unpruned = (gflops, metrics)
                else:
                    gflops, metrics = unpruned
                row = {"rule": rule, "keep_rate": float(rho), "pruned": pruned, "tokens": vits[0].token_counts(size)[-1],
                       "gflops": gflops, "frame_map": metrics[METRIC], "metrics": metrics}
                log(f"{rule} rho={float(rho):g}: {METRIC} = {row['frame_map']:.2f}, {gflops:.3f} GFLOPs, {row['tokens']} tokens")
                rows.append(row)
    finally:
        for vit in vits:
            vit.set_pruning_score(trained_rule)
        model.set_keep_rates(base)
    return {
        "kind": SWEEP_KIND, "label": label or f"trained: {trained_rule}", "dataset": dataset, "metric": METRIC,
        "weights": weights, "gflops_size": size, "base_keep_rates": base, "eval_random_seed": vits[0].random_seed,
        "device": machine_description(str(cfg.MODEL.DEVICE)), "torch": torch.__version__, "rows": rows,
    }


def _sample_std(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def combine_sweeps(sweeps: Sequence[dict], sources: Optional[Sequence[str]] = None) -> dict:
    """Pool sweeps by ``label`` (e.g. the trainings of several seeds): per (label, rule, keep rate)
    the mean, sample std, min and max of the frame-mAP over the sweeps, and their mean GFLOPs.

    Args:
        sweeps: sweep dicts of one dataset; every sweep of a label must have the same (rule, keep
            rate) settings.
        sources: names of the sweeps for errors (e.g. their files).

    Returns:
        the summary dict (see the module docstring); rows in the order of the first sweep of each label.
    """
    if not sweeps:
        raise ValueError("no sweeps to combine")
    sources = list(sources) if sources is not None else [f"sweep {i}" for i in range(len(sweeps))]
    datasets = {s["dataset"] for s in sweeps}
    if len(datasets) > 1:
        raise ValueError(f"the sweeps evaluate different datasets ({sorted(datasets)}): combine one dataset at a time")
    groups: Dict[str, List[int]] = {}
    for i, s in enumerate(sweeps):
        groups.setdefault(s["label"], []).append(i)
    rows = []
    for label, members in groups.items():
        settings = [(r["rule"], r["keep_rate"]) for r in sweeps[members[0]]["rows"]]
        for i in members[1:]:
            if [(r["rule"], r["keep_rate"]) for r in sweeps[i]["rows"]] != settings:
                raise ValueError(f"{sources[i]} (label {label!r}) has other rules or keep rates than {sources[members[0]]}")
        for j, (rule, rho) in enumerate(settings):
            values = [sweeps[i]["rows"][j]["frame_map"] for i in members]
            rows.append({
                "label": label, "rule": rule, "keep_rate": rho,
                "gflops": sum(sweeps[i]["rows"][j]["gflops"] for i in members) / len(members),
                "n": len(values), "frame_map_mean": sum(values) / len(values), "frame_map_std": _sample_std(values),
                "frame_map_min": min(values), "frame_map_max": max(values), "frame_map_values": values,
            })
    return {"kind": SUMMARY_KIND, "dataset": datasets.pop(), "metric": sweeps[0]["metric"], "runs": list(sources), "rows": rows}


def load_sweep(path: str) -> dict:
    """A sweep JSON written by :func:`write_sweep`; a ValueError names the file and what is missing."""
    try:
        with open(path) as f:
            sweep = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read a keep-rate sweep ({e})") from e
    if not isinstance(sweep, dict) or sweep.get("kind") != SWEEP_KIND:
        raise ValueError(f"{path}: not a keep-rate sweep (no \"kind\": \"{SWEEP_KIND}\"; write one with tools/sweep_keep_rate.py)")
    for key in ("label", "dataset", "metric", "rows"):
        if key not in sweep:
            raise ValueError(f"{path}: the sweep has no {key!r}")
    for i, row in enumerate(sweep["rows"]):
        for key in ("rule", "keep_rate", "gflops", "frame_map"):
            if not isinstance(row, dict) or key not in row:
                raise ValueError(f"{path}: rows[{i}] has no {key!r}")
    return sweep


def _curves(result: dict) -> Dict[str, List[dict]]:
    """(label, rule) name -> rows; one curve per rule of a sweep, per (label, rule) of a summary."""
    curves: Dict[str, List[dict]] = {}
    for row in result["rows"]:
        name = f"{row['label']}, {row['rule']}" if "label" in row else row["rule"]
        curves.setdefault(name, []).append(row)
    return curves


def plot_sweep(result: dict, path: str) -> str:
    """Frame-mAP against GFLOPs (paper Fig. 5) of a sweep or a summary (error bars: the std over
    runs), one line per rule (and label), points named by keep rate; PNG written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, rows in _curves(result).items():
        rows = sorted(rows, key=lambda r: r["gflops"])
        x = [r["gflops"] for r in rows]
        y = [r.get("frame_map_mean", r.get("frame_map")) for r in rows]
        err = [r.get("frame_map_std", 0.0) for r in rows]
        line = ax.errorbar(x, y, yerr=err if any(err) else None, marker="o", capsize=3, label=name)
        for xi, yi, r in zip(x, y, rows):
            ax.annotate(f"{r['keep_rate']:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7,
                        color=line[0].get_color())
    ax.set_xlabel("GFLOPs per clip")
    ax.set_ylabel(f"{result['metric']} (%)")
    runs = f", {len(result['runs'])} runs" if "runs" in result else ""
    ax.set_title(f"{result['dataset']}: accuracy by keep rate{runs}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    return path


def sweep_table(result: dict) -> str:
    """A Markdown table of a sweep or a summary (mean +- std over runs, with n)."""
    summary = "runs" in result
    head = ["training", "rule", "keep rate", "GFLOPs", result["metric"]] if summary else ["rule", "keep rate", "GFLOPs", "tokens", result["metric"]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        if summary:
            cells = [r["label"], r["rule"], f"{r['keep_rate']:g}", f"{r['gflops']:.3f}",
                     f"{r['frame_map_mean']:.2f} ± {r['frame_map_std']:.2f} (n={r['n']})"]
        else:
            cells = [r["rule"], f"{r['keep_rate']:g}", f"{r['gflops']:.3f}", str(r.get("tokens", "-")), f"{r['frame_map']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_sweep(result: dict, output_dir: str, name: str = "sweep") -> Dict[str, str]:
    """``<name>.json``, ``<name>.png`` (:func:`plot_sweep`) and ``<name>.md`` (:func:`sweep_table`)
    in ``output_dir``, each written atomically; returns their paths."""
    os.makedirs(output_dir, exist_ok=True)
    paths = {ext: os.path.join(output_dir, f"{name}.{ext}") for ext in ("json", "png", "md")}
    with atomic_write(paths["json"], "w") as f:
        json.dump(result, f, indent=2)
    plot_sweep(result, paths["png"])
    with atomic_write(paths["md"], "w") as f:
        f.write(sweep_table(result) + "\n")
    return paths
