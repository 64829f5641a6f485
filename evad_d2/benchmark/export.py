"""The deployment graphs (TorchScript, torch.export) against the eager model, by keep rate."""
import logging
from typing import List

import torch
from detectron2.modeling import build_model

from evad_d2.engine import autocast_for
from evad_d2.export import ExportableEVAD, make_graph
from evad_d2.modeling.backbone import scaled_keep_rates

from .inference import config_for_model
from .timing import BenchmarkSettings, speed_fields, time_interleaved

logger = logging.getLogger(__name__)

GRAPH_KINDS = ("eager", "torchscript", "exported_program")


def benchmark_export(cfg, settings: BenchmarkSettings, source: str = "the config") -> List[dict]:
    """Latency and throughput of ``eager_*``, ``torchscript_*`` and ``exported_program_*`` for one
    (3, T, H, W) network-input clip, each graph made for the row's keep rate, and
    ``*_speedup_vs_eager``. ``source`` names the config in errors.

    Raises:
        SystemExit: ``settings.batch_size`` is not 1 (the graphs take one clip).
    """
    if settings.batch_size != 1:
        raise SystemExit("--part export times one clip per call (the exported graphs take one): use --batch-size 1")
    device = torch.device(settings.device)
    cfg = config_for_model(cfg, settings, source)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    size = settings.clip_size(cfg)
    clip = (torch.rand(3, *size, generator=torch.Generator().manual_seed(0)) * 255).to(device)
    base = list(cfg.MODEL.EVAD.KEEP_RATES)

    def inference(fn):
        def call():
            with torch.inference_mode(), autocast_for(device, settings.dtype):
                fn(clip)

        return call

    results, calls = [], {}
    for rho in settings.keep_rates:
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
    times = time_interleaved(calls, settings.repeats, settings.warmup, device)
    for row in results:
        for kind in GRAPH_KINDS:
            row.update(speed_fields(times[(row["keep_rate"], kind)], 1, size[0], prefix=f"{kind}_"))
        for kind in GRAPH_KINDS[1:]:
            row[f"{kind}_speedup_vs_eager"] = row[f"{kind}_clips_per_s"] / row["eager_clips_per_s"]
    return results
