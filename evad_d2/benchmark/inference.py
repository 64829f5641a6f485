"""Inference benchmarks by keep rate: the pruning ViT alone, and the whole detector (end to end
through :class:`EVADPredictor`, and the model alone).

Each returns one dict per keep rate (see ``tools/benchmark.py`` for the fields).
"""
import logging
import os
from typing import Dict, List, Tuple

import numpy as np
import torch
from detectron2.modeling import build_backbone

from evad_d2.engine import autocast_for
from evad_d2.engine.predictor import EVADPredictor
from evad_d2.modeling.backbone import scaled_keep_rates
from evad_d2.utils.flops import flop_count_analysis, method_flops

from .breakdown import part_fields, part_times
from .timing import BenchmarkSettings, add_ratios, speed_fields, time_interleaved

logger = logging.getLogger(__name__)


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


def config_for_model(cfg, settings: BenchmarkSettings, source: str):
    """The config with the benchmark's device and frame count.

    Args:
        source: where the config came from (named in the error).

    Raises:
        SystemExit: MODEL.WEIGHTS names a file that does not exist.
    """
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = settings.device
    if settings.input_size:
        cfg.INPUT.NUM_FRAMES = settings.input_size[0]
    if cfg.MODEL.WEIGHTS and not os.path.isfile(cfg.MODEL.WEIGHTS):
        raise SystemExit(
            f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS!r} (from {source}) does not exist. Speed does not depend on "
            "the weights: add `MODEL.WEIGHTS \"\"` to benchmark randomly initialised ones."
        )
    cfg.freeze()
    return cfg


def at_rate(model, base: List[float], rho: float, fn):
    """A call that sets the keep rate ``rho`` (scaled from ``base``) and then runs ``fn()``."""

    def call():
        model.set_keep_rates(scaled_keep_rates(base, rho))
        return fn()

    return call


def backbone_flops(vit, clip: torch.Tensor, batch_size: int) -> Dict[str, float]:
    """Per-clip GFLOPs of the pruning ViT on ``clip`` (B, 3, T, H, W): the method's and the executed count."""
    with torch.no_grad():
        executed = flop_count_analysis(vit, (clip,)).total() / 1e9 / batch_size
        with method_flops(vit):
            method = flop_count_analysis(vit, (clip,)).total() / 1e9 / batch_size
    return {"gflops_executed": executed, "gflops": method}


def benchmark_backbone(cfg, settings: BenchmarkSettings) -> List[dict]:
    """The pruning ViT alone on a random (B, 3, T, H, W) clip, one row per keep rate."""
    device = torch.device(settings.device)
    vit = build_backbone(cfg).net.to(device).eval()
    t, h, w = settings.clip_size(cfg)
    torch.manual_seed(0)
    clip = torch.randn(settings.batch_size, 3, t, h, w, device=device)
    base = list(cfg.MODEL.EVAD.KEEP_RATES)

    def forward():
        with torch.no_grad(), autocast_for(device, settings.dtype):
            vit(clip)

    results = []
    for rho in settings.keep_rates:
        vit.set_keep_rates(scaled_keep_rates(base, rho))
        row = {"keep_rate": rho, "input_size": [t, h, w], "batch_size": settings.batch_size,
               "tokens": vit.token_counts(clip.shape)[-1]}
        if settings.flops:
            row.update(backbone_flops(vit, clip, settings.batch_size))
            logger.info("rho=%.2f: %.4g GFLOPs (%.4g executed)", rho, row["gflops"], row["gflops_executed"])
        results.append(row)

    calls = {rho: at_rate(vit, base, rho, forward) for rho in settings.keep_rates}
    times = time_interleaved(calls, settings.repeats, settings.warmup, device)
    for row in results:
        row.update(speed_fields(times[row["keep_rate"]], settings.batch_size, t))
    add_ratios(results, [("clips_per_s", "speedup_vs_ref"), ("gflops", "gflops_ratio_vs_ref")])
    return results


def benchmark_model(cfg, settings: BenchmarkSettings, source: str = "the config") -> List[dict]:
    """The whole detector in inference, end to end from uint8 (T, H, W, 3) frames through
    :class:`EVADPredictor` and model-only on the already-resized clips on the device; one row per
    keep rate, with the model-only time per part (``model_part_*_ms``, :mod:`.breakdown`, a
    separate pass after the timed runs). ``source`` names the config in errors."""
    device = torch.device(settings.device)
    cfg = config_for_model(cfg, settings, source)
    torch.manual_seed(0)
    predictor = EVADPredictor(cfg, precision=settings.dtype)
    model = predictor.model
    t, h, w = settings.clip_size(cfg)
    rng = np.random.default_rng(0)
    # What a user hands the predictor: decoded RGB frames.
    frames = [rng.integers(0, 256, size=(t, h, w, 3), dtype=np.uint8) for _ in range(settings.batch_size)]
    # The model-only input: the predictor's preprocessing done once, the clips already on the device.
    model_inputs = [dict(x, clip=x["clip"].to(device)) for x in map(predictor.preprocess, frames)]
    base = list(cfg.MODEL.EVAD.KEEP_RATES)

    def end_to_end():
        return predictor.predict_batch(frames)

    def model_only():
        with torch.inference_mode(), autocast_for(device, settings.dtype):
            model(model_inputs)

    results = []
    for rho in settings.keep_rates:
        model.set_keep_rates(scaled_keep_rates(base, rho))
        size, tokens = network_input(model, model_inputs)
        actors = end_to_end()
        row = {
            "keep_rate": rho, "input_size": [t, h, w], "model_input_size": size, "batch_size": settings.batch_size,
            "tokens": tokens,
            # Postprocessing cost grows with the actors found; random weights rarely find any.
            "num_actors": sum(len(a) for a in actors) / len(actors),
        }
        if settings.flops:
            row.update(model_gflops(model, model_inputs))
            logger.info("rho=%.2f: %.4g GFLOPs (%.4g executed)", rho, row["gflops"], row["gflops_executed"])
        results.append(row)

    calls = {}
    for rho in settings.keep_rates:
        calls[(rho, "e2e")] = at_rate(model, base, rho, end_to_end)
        calls[(rho, "model")] = at_rate(model, base, rho, model_only)
    times = time_interleaved(calls, settings.repeats, settings.warmup, device)
    for row in results:
        rho = row["keep_rate"]
        row.update(speed_fields(times[(rho, "e2e")], settings.batch_size, t))
        row.update(speed_fields(times[(rho, "model")], settings.batch_size, t, prefix="model_"))
        model.set_keep_rates(scaled_keep_rates(base, rho))
        row.update(part_fields(part_times(model, model_only, settings.repeats, device)))
    add_ratios(
        results,
        [("clips_per_s", "speedup_vs_ref"), ("model_clips_per_s", "model_speedup_vs_ref"), ("gflops", "gflops_ratio_vs_ref")],
    )
    return results
