"""Parameters and GFLOPs of an EVAD model, in total and per part (``tools/analyze_model.py``).

Parts: ``backbone`` (the pruning ViT), ``neck`` (simple FPN), ``localization_head`` (proposals
included), ``action_head``. GFLOPs are fvcore multiply-adds with attention and RoIAlign counted,
for one clip in inference.
"""
from typing import Dict, List, Optional, Sequence

import torch

from evad_d2.utils.flops import flop_count_analysis, method_flops

# The paper's whole-model GFLOPs for ViT-B at 16x224x224 (Table 2a).
PAPER_GFLOPS_VIT_B_224 = {1.0: 223.8, 0.9: 186.3, 0.8: 157.0, 0.7: 134.2, 0.6: 116.3}


def part_modules(model) -> Dict[str, List[str]]:
    """Module-name prefixes making up each part."""
    return {
        "backbone": ["backbone.net"],
        "neck": [f"backbone.{n}" for n, _ in model.backbone.named_children() if n != "net"],
        "localization_head": ["localization_head"],
        "action_head": ["action_head"],
    }


def count_parameters(model) -> Dict[str, int]:
    """``total`` and each part's parameter count."""
    counts = {"total": sum(p.numel() for p in model.parameters())}
    for part, prefixes in part_modules(model).items():
        counts[part] = sum(
            p.numel() for n, p in model.named_parameters() if any(n == q or n.startswith(q + ".") for q in prefixes)
        )
    return counts


def count_gflops(model, clip_size: Sequence[int]) -> Dict[str, float]:
    """``total`` and each part's GFLOPs (the method's count) for one random (3, T, H, W) clip."""
    t, h, w = clip_size
    torch.manual_seed(0)
    inputs = [{"clip": torch.rand(3, t, h, w) * 255, "height": h, "width": w}]
    with torch.no_grad(), method_flops(model):
        analysis = flop_count_analysis(model, inputs)
        # detectron2's tracing adapter holds the model as its "model" child.
        by_module = {k[len("model.") :] if k.startswith("model.") else k: v for k, v in analysis.by_module().items()}
        total = analysis.total()
    gflops = {"total": total / 1e9}
    for part, prefixes in part_modules(model).items():
        gflops[part] = sum(by_module.get(q, 0) for q in prefixes) / 1e9
    # The meta-architecture calls the neck's forward_features directly (not as a module), so its
    # resizing is counted at the model's top level: the neck is everything outside the other parts.
    gflops["neck"] = gflops["total"] - sum(v for k, v in gflops.items() if k not in ("total", "neck"))
    return gflops


def paper_comparison(gflops_by_keep_rate: Dict[str, dict], clip_size: Sequence[int], embed_dim: int) -> Optional[List[dict]]:
    """Rows ``{keep_rate, ours, paper, ratio}`` against :data:`PAPER_GFLOPS_VIT_B_224` for the keep
    rates counted (keys ``str(rho)``), or None unless the model is ViT-B (768) at 16x224x224."""
    paper = {rho: ref for rho, ref in PAPER_GFLOPS_VIT_B_224.items() if str(rho) in gflops_by_keep_rate}
    if not paper or tuple(clip_size) != (16, 224, 224) or embed_dim != 768:
        return None
    rows = []
    for rho, ref in sorted(paper.items(), reverse=True):
        ours = gflops_by_keep_rate[str(rho)]["total"]
        rows.append({"keep_rate": rho, "ours": ours, "paper": ref, "ratio": ours / ref})
    return rows
