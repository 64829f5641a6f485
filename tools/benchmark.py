#!/usr/bin/env python
"""Speed and cost of EVAD by keep rate, measured in one run (the machines are noisy).

Examples (ViT-B, 16x224x224, batch 1; MODEL.WEIGHTS "" times randomly initialised weights)::

    python tools/benchmark.py --config-file configs/AVA/v2.2/EVAD_ViT-B_K400_rho0.7_224.yaml \\
        --part backbone --keep-rates 1.0 0.9 0.8 0.7 0.6 --input-size 16 224 224 --json out.json
    python tools/benchmark.py --config-file ... --part model --keep-rates 1.0 0.7 --json out.json \\
        MODEL.WEIGHTS ""
    python tools/benchmark.py --config-file ... --part model --mode train --keep-rates 1.0 0.7 \\
        MODEL.WEIGHTS ""
    python tools/benchmark.py --config-file ... --part loader --workers 0 2 --dataset-root DIR

For every keep rate rho, the pruning blocks of the config (those with keep rate < 1) get rho and
the others stay at 1. The same weights and the same input serve every rate; repetitions are
interleaved across rates and medians reported, so drift of the machine hits all rates alike.
CUDA calls are timed with events after warm-up; ``--dtype bf16/fp16`` runs under autocast.

Parts and what they report (one JSON object per keep rate; ``part`` and ``mode`` name the run):

``--part backbone``: the pruning ViT alone on a random (B, 3, T, H, W) clip.

``--part model`` (inference): the whole detector, timed two ways.
    * end to end (``clips_per_s``, ``frames_per_s``, ``latency_ms``, ``latency_all_ms``): from
      uint8 (T, H, W, 3) RGB frames of size ``--input-size``, as a user hands them to
      ``EVADPredictor``: its preprocessing (float conversion, the config's test resize), the model
      (normalise, pad, network, person-score threshold, boxes rescaled to the input frames),
      instances to the CPU and the predictor's per-actor dicts;
    * model only (``model_clips_per_s``, ..., ``model_latency_all_ms``): ``model(inputs)`` on the
      already-resized clips, already on the device.
    ``model_input_size`` is the (T, H, W) the network sees after resizing and padding.

``--part model --mode train``: one training step (forward, losses, backward, optimizer step, in
    detectron2's SimpleTrainer order, with a GradScaler for fp16) on a fixed synthetic batch of
    ``--input-size`` clips (the mapper's output size: no resizing) with two ground-truth actors
    each. ``step_ms`` (median), ``step_all_ms``, ``clips_per_s`` = batch / step time, and peak
    memory (the paper's Fig. 8): on CUDA ``torch.cuda.max_memory_allocated`` over the rate's steps
    (reset before each step); on the CPU the high-water mark of the resident set (``ru_maxrss``)
    of a fresh process per keep rate that builds the same model and batch and runs two steps
    (the second step's forward runs with gradients and optimizer state alive, the first's does
    not); glibc is told to map every block of 64 KiB or more on its own, so that freed tensors
    leave the resident set. ``memory_before_step_mb`` is the same measure before the first step (model, optimizer
    and batch built), so ``step_memory_mb`` = peak - before is what training adds. Python's
    tracemalloc cannot be used: it does not see torch's allocations. ``--no-memory`` skips it.

``--part export``: the deployment graphs of ``tools/export_model.py`` against the eager model, for
    one (3, T, H, W) clip of ``--input-size`` (the network input, as the export takes it; batch 1):
    ``eager_*``, ``torchscript_*`` (torch.jit.trace) and ``exported_program_*`` (torch.export)
    latency and throughput, each graph made for the row's keep rate; ``*_speedup_vs_eager``.

``--part loader`` (or ``--loader``): clips/s of the config's training data loader (the dataset of
    ``DATASETS.TRAIN``, ``ClipDatasetMapper(cfg, is_train=True)``) for each ``--workers`` count,
    one object per worker count (``keep_rate`` and ``gflops`` are null, ``mode`` is train). ``--dataset-root DIR``
    registers the AVA-format dataset at DIR (split train, ``--dataset-version``) and uses it in
    place of ``DATASETS.TRAIN``.

Throughput: ``clips_per_s`` is clips per second; ``frames_per_s`` = clips_per_s x T counts the
input frames. The paper (section 4.1) reports "the number of images that can be processed in one
second", a clip "containing 16 frame images", on an A100 at batch 8. Its 298 for ViT-B at rho 1.0
(223.8 G multiply-adds per clip) is most plausibly frames (18.6 clips/s, 8.3 TFLOP/s): as clips it
would need 134 TFLOP/s, 86% of the A100's TF32 peak, implausible for this model. Compare
``frames_per_s`` with the paper's numbers. ``*_vs_ref`` fields are ratios to keep rate 1.0 (else
the first rate given).

GFLOPs are fvcore multiply-adds per clip with attention and RoIAlign counted, of the inference
forward (also in train mode). ``gflops`` counts the method (each attention map computed once, as
the paper counts); ``gflops_executed`` counts what the fast pruning kernel runs (it recomputes
QK^T columns from the log-sum-exp; see attention.py).
"""
import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data.build import get_detection_dataset_dicts
from detectron2.modeling import build_backbone, build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.logger import setup_logger
from tabulate import tabulate

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from evad_d2 import get_evad_cfg  # noqa: E402
from evad_d2.data import ClipDatasetMapper, register_ava  # noqa: E402
from evad_d2.engine import PRECISIONS, autocast_for, build_optimizer  # noqa: E402
from evad_d2.engine.predictor import EVADPredictor  # noqa: E402
from evad_d2.export import ExportableEVAD, make_graph  # noqa: E402
from evad_d2.modeling.backbone import scaled_keep_rates  # noqa: E402
from evad_d2.utils.flops import flop_count_analysis, method_flops  # noqa: E402

logger = logging.getLogger("evad_d2.benchmark")

# Name under which --dataset-root registers its dataset for --part loader.
BENCHMARK_TRAIN_DATASET = "evad_benchmark_train"
# Marks the line a --memory-probe child prints for its parent.
_PROBE_TAG = "EVAD_MEMORY_PROBE"


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument(
        "--part", choices=["backbone", "model", "export", "loader"], default="backbone",
        help="the pruning ViT alone, the whole detector, its exported graphs, or the training data loader",
    )
    p.add_argument("--loader", dest="part", action="store_const", const="loader", help="same as --part loader")
    p.add_argument(
        "--mode", choices=["inference", "train"], default="inference",
        help="train: training step time and peak memory (with --part model)",
    )
    p.add_argument("--keep-rates", type=float, nargs="+", default=[1.0, 0.9, 0.8, 0.7, 0.6])
    p.add_argument(
        "--input-size", type=int, nargs=3, default=None, metavar=("T", "H", "W"),
        help="clip size (model inference: the raw frames, resized as the config's test resize does); "
        "default: INPUT.NUM_FRAMES and MIN_SIZE_TEST square",
    )
    p.add_argument("--batch-size", type=int, default=1, help="clips per forward, training step or loader batch")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per keep rate (interleaved)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per keep rate first")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--dtype", "--precision", dest="dtype", choices=list(PRECISIONS), default="fp32",
        help="fp32, or bf16/fp16 autocast (as tools/demo.py --precision)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-flops", action="store_true", help="skip the fvcore FLOP count")
    p.add_argument("--no-memory", action="store_true", help="train mode: skip the peak-memory measurement")
    p.add_argument("--workers", type=int, nargs="+", default=None, help="loader worker counts (default DATALOADER.NUM_WORKERS)")
    p.add_argument("--num-batches", type=int, default=20, help="loader: timed batches per worker count")
    p.add_argument("--dataset-root", default=None, help=f"loader: AVA-format dataset to use (registered as {BENCHMARK_TRAIN_DATASET})")
    p.add_argument("--dataset-version", default="2.2", help="loader: AVA version of --dataset-root's annotation files")
    p.add_argument("--json", default=None, help="write the results here (a list, one object per keep rate)")
    # Internal: run as the fresh process that measures one keep rate's training memory on the CPU.
    p.add_argument("--memory-probe", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return p


def timer(device: torch.device) -> Callable[[Callable[[], None]], float]:
    """Seconds one call takes; CUDA calls are timed with events after a synchronize."""
    if device.type == "cuda":

        def run(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            return start.elapsed_time(end) / 1000.0

    else:

        def run(fn):
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0

    return run


def time_interleaved(calls: Dict, repeats: int, warmup: int, device) -> Dict[object, List[float]]:
    """Seconds of each call per repetition; every repetition runs all calls once, in order."""
    run = timer(device)
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in calls}
    for r in range(repeats):
        for k, fn in calls.items():
            times[k].append(run(fn))
        logger.info("repetition %d/%d done", r + 1, repeats)
    return times


def speed_fields(seconds: List[float], batch_size: int, num_frames: int, prefix: str = "", unit: str = "latency") -> dict:
    """Median latency, every repetition, and the throughput the median gives."""
    med = statistics.median(seconds)
    return {
        f"{prefix}{unit}_ms": med * 1000,
        f"{prefix}{unit}_all_ms": [x * 1000 for x in seconds],
        f"{prefix}clips_per_s": batch_size / med,
        f"{prefix}frames_per_s": batch_size * num_frames / med,
    }


def add_ratios(results: List[dict], fields: Sequence[Tuple[str, str]]) -> None:
    """``results[i][out] = results[i][key] / reference[key]``, the reference being keep rate 1.0
    (else the first row)."""
    ref = next((r for r in results if r["keep_rate"] == 1.0), results[0])
    for row in results:
        for key, out in fields:
            if key in row and key in ref:
                row[out] = row[key] / ref[key]


def benchmark_backbone(cfg, args) -> List[dict]:
    device = torch.device(args.device)
    vit = build_backbone(cfg).net.to(device).eval()
    t, h, w = args.input_size or (cfg.INPUT.NUM_FRAMES, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST)
    torch.manual_seed(0)
    clip = torch.randn(args.batch_size, 3, t, h, w, device=device)
    base = list(cfg.MODEL.EVAD.KEEP_RATES)

    def forward_at(rho):
        def fn():
            vit.set_keep_rates(scaled_keep_rates(base, rho))
            with torch.no_grad(), autocast_for(device, args.dtype):
                vit(clip)

        return fn

    results = []
    for rho in args.keep_rates:
        vit.set_keep_rates(scaled_keep_rates(base, rho))
        row = {"keep_rate": rho, "input_size": [t, h, w], "batch_size": args.batch_size, "tokens": vit.token_counts(clip.shape)[-1]}
        if not args.no_flops:
            with torch.no_grad():
                row["gflops_executed"] = flop_count_analysis(vit, (clip,)).total() / 1e9 / args.batch_size
                with method_flops(vit):
                    row["gflops"] = flop_count_analysis(vit, (clip,)).total() / 1e9 / args.batch_size
            logger.info("rho=%.2f: %.4g GFLOPs (%.4g executed)", rho, row["gflops"], row["gflops_executed"])
        results.append(row)

    times = time_interleaved({rho: forward_at(rho) for rho in args.keep_rates}, args.repeats, args.warmup, device)
    for row in results:
        row.update(speed_fields(times[row["keep_rate"]], args.batch_size, t))
    add_ratios(results, [("clips_per_s", "speedup_vs_ref"), ("gflops", "gflops_ratio_vs_ref")])
    return results


# --------------------------------------------------------------------------- whole model
def model_gflops(model, inputs: List[dict]) -> Dict[str, float]:
    """Per-clip GFLOPs of the detector's inference forward: the method's and the executed count."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        executed = flop_count_analysis(model, inputs).total()
        with method_flops(model):
            method = flop_count_analysis(model, inputs).total()
    model.train(was_training)
    return {"gflops": method / 1e9 / len(inputs), "gflops_executed": executed / 1e9 / len(inputs)}


def network_input(model, inputs: List[dict]) -> Tuple[List[int], int]:
    """(T, H, W) of the normalised, padded batch the network sees, and its tokens after the last block."""
    with torch.no_grad():
        shape = model.preprocess_clips(inputs).tensor.shape
    return list(shape[-3:]), model.backbone.net.token_counts(shape)[-1]


def _config_for_model(cfg, args):
    """The config with the benchmark's device and frame count; checks MODEL.WEIGHTS exists."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = args.device
    if args.input_size:
        cfg.INPUT.NUM_FRAMES = args.input_size[0]
    if cfg.MODEL.WEIGHTS and not os.path.isfile(cfg.MODEL.WEIGHTS):
        raise SystemExit(
            f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS!r} (from {args.config_file}) does not exist. Speed does not depend on "
            "the weights: add `MODEL.WEIGHTS \"\"` to benchmark randomly initialised ones."
        )
    cfg.freeze()
    return cfg


def benchmark_model(cfg, args) -> List[dict]:
    device = torch.device(args.device)
    cfg = _config_for_model(cfg, args)
    torch.manual_seed(0)
    predictor = EVADPredictor(cfg, precision=args.dtype)
    model = predictor.model
    t, h, w = args.input_size or (cfg.INPUT.NUM_FRAMES, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST)
    rng = np.random.default_rng(0)
    # What a user hands the predictor: decoded RGB frames.
    frames = [rng.integers(0, 256, size=(t, h, w, 3), dtype=np.uint8) for _ in range(args.batch_size)]
    # The model-only input: the predictor's preprocessing done once, the clips already on the device.
    model_inputs = [dict(x, clip=x["clip"].to(device)) for x in map(predictor.preprocess, frames)]
    base = list(cfg.MODEL.EVAD.KEEP_RATES)

    def end_to_end():
        return predictor.predict_batch(frames)

    def model_only():
        with torch.inference_mode(), autocast_for(device, args.dtype):
            model(model_inputs)

    def at_rate(rho, fn):
        def call():
            model.set_keep_rates(scaled_keep_rates(base, rho))
            return fn()

        return call

    results = []
    for rho in args.keep_rates:
        model.set_keep_rates(scaled_keep_rates(base, rho))
        size, tokens = network_input(model, model_inputs)
        actors = end_to_end()
        row = {
            "keep_rate": rho, "input_size": [t, h, w], "model_input_size": size, "batch_size": args.batch_size,
            "tokens": tokens,
            # Postprocessing cost grows with the actors found; random weights rarely find any.
            "num_actors": sum(len(a) for a in actors) / len(actors),
        }
        if not args.no_flops:
            row.update(model_gflops(model, model_inputs))
            logger.info("rho=%.2f: %.4g GFLOPs (%.4g executed)", rho, row["gflops"], row["gflops_executed"])
        results.append(row)

    calls = {}
    for rho in args.keep_rates:
        calls[(rho, "e2e")] = at_rate(rho, end_to_end)
        calls[(rho, "model")] = at_rate(rho, model_only)
    times = time_interleaved(calls, args.repeats, args.warmup, device)
    for row in results:
        rho = row["keep_rate"]
        row.update(speed_fields(times[(rho, "e2e")], args.batch_size, t))
        row.update(speed_fields(times[(rho, "model")], args.batch_size, t, prefix="model_"))
    add_ratios(
        results,
        [("clips_per_s", "speedup_vs_ref"), ("model_clips_per_s", "model_speedup_vs_ref"), ("gflops", "gflops_ratio_vs_ref")],
    )
    return results


# --------------------------------------------------------------------------- exported graphs
def benchmark_export(cfg, args) -> List[dict]:
    if args.batch_size != 1:
        raise SystemExit("--part export times one clip per call (the exported graphs take one): use --batch-size 1")
    device = torch.device(args.device)
    cfg = _config_for_model(cfg, args)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    size = args.input_size or (cfg.INPUT.NUM_FRAMES, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST)
    clip = (torch.rand(3, *size, generator=torch.Generator().manual_seed(0)) * 255).to(device)
    base = list(cfg.MODEL.EVAD.KEEP_RATES)

    def inference(fn):
        def call():
            with torch.inference_mode(), autocast_for(device, args.dtype):
                fn(clip)

        return call

    results, calls = [], {}
    for rho in args.keep_rates:
        model.set_keep_rates(scaled_keep_rates(base, rho))
        wrapper = ExportableEVAD(model, size)
        logger.info("rho=%.2f: exporting (torch.jit.trace, torch.export)", rho)
        torchscript = make_graph(wrapper, clip, "torchscript")
        exported = make_graph(wrapper, clip, "exported_program").module()

        def eager(x, rho=rho, wrapper=wrapper):
            model.set_keep_rates(scaled_keep_rates(base, rho))
            return wrapper(x)

        calls[(rho, "eager")] = inference(eager)
        calls[(rho, "torchscript")] = inference(torchscript)
        calls[(rho, "exported_program")] = inference(exported)
        results.append({"keep_rate": rho, "input_size": list(size), "batch_size": 1})
    times = time_interleaved(calls, args.repeats, args.warmup, device)
    for row in results:
        for kind in ("eager", "torchscript", "exported_program"):
            row.update(speed_fields(times[(row["keep_rate"], kind)], 1, size[0], prefix=f"{kind}_"))
        for kind in ("torchscript", "exported_program"):
            row[f"{kind}_speedup_vs_eager"] = row[f"{kind}_clips_per_s"] / row["eager_clips_per_s"]
    return results


# --------------------------------------------------------------------------- training
def synthetic_training_batch(batch_size: int, size: Sequence[int], num_classes: int, device) -> List[dict]:
    """Fixed clips (3, T, H, W) in [0, 255] with two ground-truth actors each (the mapper's output)."""
    t, h, w = size
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    batch = []
    for i in range(batch_size):
        inst = Instances((h, w))
        inst.gt_boxes = Boxes((torch.tensor([[0.10, 0.15, 0.45, 0.90], [0.50, 0.20, 0.90, 0.95]]) * scale).to(device))
        actions = torch.zeros(2, num_classes)
        actions[0, i % num_classes] = 1.0
        actions[1, (i + 1) % num_classes] = 1.0
        actions[1, (i + 2) % num_classes] = 1.0  # multi-label, as AVA's
        inst.gt_actions = actions.to(device)
        clip = (torch.rand(3, t, h, w, generator=g) * 255).to(device)
        batch.append({"clip": clip, "height": h, "width": w, "instances": inst})
    return batch


def build_training(cfg, args):
    """(model in train mode, batch, step(rho)) for a training benchmark."""
    device = torch.device(args.device)
    cfg = _config_for_model(cfg, args)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer = build_optimizer(cfg, model)
    size = args.input_size or (cfg.INPUT.NUM_FRAMES, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST)
    batch = synthetic_training_batch(args.batch_size, size, cfg.MODEL.EVAD.NUM_ACTION_CLASSES, device)
    scaler = torch.amp.GradScaler(device.type) if args.dtype == "fp16" else None
    base = list(cfg.MODEL.EVAD.KEEP_RATES)

    def step(rho):
        model.set_keep_rates(scaled_keep_rates(base, rho))
        with autocast_for(device, args.dtype):
            losses = model(batch)
        loss = sum(losses.values())
        optimizer.zero_grad()
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    return model, batch, step


def _maxrss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def memory_probe(cfg, args) -> None:
    """In a fresh process: two training steps at one keep rate; print the RSS high-water marks."""
    _, _, step = build_training(cfg, args)
    before = _maxrss_mb()
    for _ in range(2):
        step(args.memory_probe)
    print(_PROBE_TAG, json.dumps({"before_mb": before, "peak_mb": _maxrss_mb()}), flush=True)


def cpu_training_memory(argv: List[str], keep_rates: Sequence[float]) -> Dict[float, dict]:
    """Run :func:`memory_probe` in one fresh process per keep rate (one at a time)."""
    found = {}
    for rho in keep_rates:
        cmd = [sys.executable, os.path.abspath(__file__), "--memory-probe", repr(rho), *argv]
        # glibc then serves every allocation of 64 KiB or more with its own mapping and unmaps it
        # when freed, so the resident set follows the live tensors instead of the malloc arenas'
        # cached free space (other platforms ignore the variable).
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith(_PROBE_TAG)]
        if out.returncode != 0 or not lines:
            raise RuntimeError(f"memory probe at keep rate {rho} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
        found[rho] = json.loads(lines[-1][len(_PROBE_TAG):])
        logger.info("rho=%.2f: peak RSS %.0f MB (%.0f MB before the first step)", rho, found[rho]["peak_mb"], found[rho]["before_mb"])
    return found


def benchmark_training(cfg, args, argv: List[str]) -> List[dict]:
    device = torch.device(args.device)
    memory: Dict[float, dict] = {}
    # The probes run before the timing, so that they never compete with it for the CPU.
    if not args.no_memory and device.type == "cpu":
        memory = cpu_training_memory(argv, args.keep_rates)
    model, batch, step = build_training(cfg, args)
    t, h, w = batch[0]["clip"].shape[1:]
    base = list(cfg.MODEL.EVAD.KEEP_RATES)
    track_cuda = not args.no_memory and device.type == "cuda"
    if track_cuda:
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device) / 2**20
        memory = {rho: {"before_mb": before, "peak_mb": 0.0} for rho in args.keep_rates}

    results = []
    for rho in args.keep_rates:
        model.set_keep_rates(scaled_keep_rates(base, rho))
        size, tokens = network_input(model, batch)
        row = {"keep_rate": rho, "input_size": [t, h, w], "model_input_size": size, "batch_size": args.batch_size, "tokens": tokens}
        if not args.no_flops:
            row.update(model_gflops(model, [{k: v for k, v in x.items() if k != "instances"} for x in batch]))
        results.append(row)

    def step_at(rho):
        def call():
            if track_cuda:
                torch.cuda.reset_peak_memory_stats(device)
            step(rho)
            if track_cuda:
                peak = torch.cuda.max_memory_allocated(device) / 2**20
                memory[rho]["peak_mb"] = max(memory[rho]["peak_mb"], peak)

        return call

    times = time_interleaved({rho: step_at(rho) for rho in args.keep_rates}, args.repeats, args.warmup, device)
    method = "torch.cuda.max_memory_allocated" if track_cuda else "ru_maxrss of a fresh process per keep rate (2 steps)"
    for row in results:
        rho = row["keep_rate"]
        row.update(speed_fields(times[rho], args.batch_size, t, unit="step"))
        if rho in memory:
            m = memory[rho]
            row.update(
                peak_memory_mb=m["peak_mb"], memory_before_step_mb=m["before_mb"],
                step_memory_mb=m["peak_mb"] - m["before_mb"], memory_method=method,
            )
    add_ratios(
        results,
        [("clips_per_s", "speedup_vs_ref"), ("step_ms", "step_time_ratio_vs_ref"), ("peak_memory_mb", "memory_ratio_vs_ref"),
         ("gflops", "gflops_ratio_vs_ref")],
    )
    return results


# --------------------------------------------------------------------------- data loader
def benchmark_loader(cfg, args) -> List[dict]:
    # A sibling script, not a package module.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from benchmark_data import measure_loader_throughput

    cfg = cfg.clone()
    cfg.defrost()
    if args.dataset_root:
        if not os.path.isdir(args.dataset_root):
            raise SystemExit(
                f"--dataset-root {args.dataset_root}: no such directory. Write a small AVA-format dataset there with "
                f"`python datasets/generate_ava_like.py --out {args.dataset_root}`."
            )
        register_ava(BENCHMARK_TRAIN_DATASET, args.dataset_root, "train", args.dataset_version, "auto")
        cfg.DATASETS.TRAIN = (BENCHMARK_TRAIN_DATASET,)
    names = list(cfg.DATASETS.TRAIN)
    source = f"--dataset-root {args.dataset_root}" if args.dataset_root else f"DATASETS.TRAIN of {args.config_file}"
    try:
        dataset = get_detection_dataset_dicts(names, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
    except (FileNotFoundError, KeyError) as e:
        raise SystemExit(
            f"--part loader: cannot load the training set {names} ({source}): {e}\n"
            "Pass --dataset-root DIR (an AVA-format dataset, e.g. from datasets/generate_ava_like.py) or set EVAD_DATASETS."
        ) from None
    mapper = ClipDatasetMapper(cfg, is_train=True)
    results = []
    for workers in args.workers if args.workers is not None else [cfg.DATALOADER.NUM_WORKERS]:
        rate = measure_loader_throughput(dataset, mapper, num_workers=workers, batch_size=args.batch_size, num_batches=args.num_batches)
        logger.info("%d workers: %.2f clips/s", workers, rate)
        results.append(
            {
                "keep_rate": None, "gflops": None, "num_workers": workers, "clips_per_s": rate,
                "frames_per_s": rate * cfg.INPUT.NUM_FRAMES, "batch_size": args.batch_size,
                "num_batches": args.num_batches, "datasets": names, "num_keyframes": len(dataset),
            }
        )
    return results


# --------------------------------------------------------------------------- main
def machine_description(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({torch.get_num_threads()} threads, {os.cpu_count()} cores)"


_TABLE_COLUMNS = {
    ("backbone", "inference"): [
        "keep_rate", "tokens", "gflops", "gflops_ratio_vs_ref", "latency_ms", "clips_per_s", "frames_per_s", "speedup_vs_ref",
    ],
    ("model", "inference"): [
        "keep_rate", "tokens", "gflops", "gflops_ratio_vs_ref", "latency_ms", "clips_per_s", "frames_per_s", "speedup_vs_ref",
        "model_latency_ms", "model_frames_per_s", "model_speedup_vs_ref",
    ],
    ("model", "train"): [
        "keep_rate", "tokens", "gflops", "step_ms", "step_time_ratio_vs_ref", "clips_per_s", "peak_memory_mb",
        "step_memory_mb", "memory_ratio_vs_ref",
    ],
    ("export", "inference"): [
        "keep_rate", "eager_latency_ms", "torchscript_latency_ms", "torchscript_speedup_vs_eager",
        "exported_program_latency_ms", "exported_program_speedup_vs_eager",
    ],
    ("loader", "train"): ["num_workers", "batch_size", "clips_per_s", "frames_per_s"],
}


def main(argv: Optional[List[str]] = None) -> List[dict]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_parser().parse_args(argv)
    setup_logger(name="evad_d2")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mode == "train" and args.part != "model":
        raise SystemExit(f"--mode train measures the whole model's training step: use it with --part model, not --part {args.part}")
    cfg = get_evad_cfg(args.config_file, args.opts)
    if args.memory_probe is not None:
        memory_probe(cfg, args)
        return []
    if args.part == "backbone":
        results = benchmark_backbone(cfg, args)
    elif args.part == "loader":
        results = benchmark_loader(cfg, args)
    elif args.part == "export":
        results = benchmark_export(cfg, args)
    elif args.mode == "train":
        results = benchmark_training(cfg, args, argv)
    else:
        results = benchmark_model(cfg, args)
    mode = "train" if args.part == "loader" else args.mode  # the loader part times the training loader
    machine = machine_description(args.device)
    for row in results:
        row.update(part=args.part, mode=mode, device=machine, dtype=args.dtype, torch=torch.__version__)
    cols = _TABLE_COLUMNS[(args.part, mode)]
    size = f", input {results[0]['input_size']}" if "input_size" in results[0] else ""
    if "model_input_size" in results[0]:
        size += f" (network {results[0]['model_input_size']})"
    print(f"\n{args.part} {mode} on {machine}{size}, batch {args.batch_size}, {args.dtype}")
    print(tabulate([[r.get(c, "-") for c in cols] for r in results], headers=cols, floatfmt=".3f"))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
