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
    not; ``evad_d2.benchmark.memory``). ``memory_before_step_mb`` is the same measure before the first step (model, optimizer
    and batch built), so ``step_memory_mb`` = peak - before is what training adds.
    ``--no-memory`` skips it. ``activation_mb``: the bytes autograd saves for backward in the
    training forward (losses included), counted exactly with ``saved_tensors_hooks``, each storage
    once, the parameters apart (``saved_parameter_mb``): independent of the allocator and the
    machine (``evad_d2.benchmark.activations``). ``--plot PNG``: step time and memory by keep rate.

``--part export``: the deployment graphs of ``tools/export_model.py`` against the eager model, for
    one (3, T, H, W) clip of ``--input-size`` (the network input, as the export takes it; batch 1):
    ``eager_*``, ``torchscript_*`` (torch.jit.trace), ``exported_program_*`` (torch.export),
    ``onnxruntime_*`` (the ONNX export in ONNX Runtime, as many threads as torch; float32; where
    onnx/onnxruntime/onnxscript are installed) and with ``--compile`` ``compiled_*``
    (torch.compile, TorchInductor) latency and throughput, each made for the row's keep rate;
    ``*_speedup_vs_eager``, ``*_max_abs_diff`` (outputs against eager on the timed clip; inf if the
    actor count differs), ``*_prepare_s`` (export or compile, and the first call); ``graphs``.

``--compile``: torch.compile the model (``TEST.COMPILE``): ``--part model`` times the compiled
    predictor (no GFLOP count then: fvcore cannot trace compiled modules; the first call of each
    keep rate compiles, in the warm-up), ``--part export`` adds the ``compiled`` column.

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
import sys
from typing import List, Optional

import torch
from detectron2.utils.logger import setup_logger

from evad_d2 import get_evad_cfg
from evad_d2.benchmark.export import benchmark_export, export_graph_kinds
from evad_d2.benchmark.inference import benchmark_backbone, benchmark_model
from evad_d2.benchmark.loader import BENCHMARK_TRAIN_DATASET, benchmark_loader
from evad_d2.benchmark.report import annotate, print_table, write_json
from evad_d2.benchmark.timing import BenchmarkSettings
from evad_d2.benchmark.training import benchmark_training
from evad_d2.benchmark.training_plot import plot_training_cost
from evad_d2.engine import PRECISIONS


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
    p.add_argument("--compile", action="store_true", help="torch.compile the model (--part model, --part export)")
    p.add_argument("--no-memory", action="store_true", help="train mode: skip the peak-memory measurement")
    p.add_argument("--plot", default=None, metavar="PNG", help="train mode: plot step time and memory by keep rate here")
    p.add_argument("--workers", type=int, nargs="+", default=None, help="loader worker counts (default DATALOADER.NUM_WORKERS)")
    p.add_argument("--num-batches", type=int, default=20, help="loader: timed batches per worker count")
    p.add_argument("--dataset-root", default=None, help=f"loader: AVA-format dataset to use (registered as {BENCHMARK_TRAIN_DATASET})")
    p.add_argument("--dataset-version", default="2.2", help="loader: AVA version of --dataset-root's annotation files")
    p.add_argument("--json", default=None, help="write the results here (a list, one object per keep rate)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return p


def run_part(cfg, args) -> List[dict]:
    """The rows of the benchmark ``args.part`` / ``args.mode`` names."""
    if args.part == "loader":
        return benchmark_loader(cfg, workers=args.workers, batch_size=args.batch_size, num_batches=args.num_batches,
                                dataset_root=args.dataset_root, dataset_version=args.dataset_version,
                                config_file=args.config_file)
    settings = BenchmarkSettings(
        keep_rates=args.keep_rates, input_size=args.input_size, batch_size=args.batch_size, repeats=args.repeats,
        warmup=args.warmup, device=args.device, dtype=args.dtype, flops=not (args.no_flops or args.compile),
    )
    if args.part == "backbone":
        return benchmark_backbone(cfg, settings)
    if args.part == "export":
        return benchmark_export(cfg, settings, args.config_file, graphs=export_graph_kinds(args.compile))
    if args.mode == "train":
        return benchmark_training(cfg, settings, measure_memory=not args.no_memory, config_file=args.config_file,
                                  opts=args.opts, threads=args.threads)
    return benchmark_model(cfg, settings, args.config_file)


def main(argv: Optional[List[str]] = None) -> List[dict]:
    args = get_parser().parse_args(sys.argv[1:] if argv is None else argv)
    setup_logger(name="evad_d2")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mode == "train" and args.part != "model":
        raise SystemExit(f"--mode train measures the whole model's training step: use it with --part model, not --part {args.part}")
    if args.plot and args.mode != "train":
        raise SystemExit("--plot draws the training cost: use it with --part model --mode train")
    if args.compile and (args.part not in ("model", "export") or args.mode == "train"):
        raise SystemExit("--compile times compiled inference: use it with --part model or --part export (inference)")
    cfg = get_evad_cfg(args.config_file, args.opts + (["TEST.COMPILE", "True"] if args.compile else []))
    results = run_part(cfg, args)
    mode = "train" if args.part == "loader" else args.mode  # the loader part times the training loader
    machine = annotate(results, args.part, mode, args.device, args.dtype)
    print_table(results, args.part, mode, machine, args.batch_size, args.dtype)
    if args.json:
        write_json(results, args.json)
    if args.plot:
        plot_training_cost(results, args.plot, title=f"training step, input {results[0]['input_size']}, batch {args.batch_size}, {machine}")
    return results


if __name__ == "__main__":
    main()
