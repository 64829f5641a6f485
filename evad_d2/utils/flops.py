"""FLOP counting with fvcore, including the attention kernels fvcore does not know.

fvcore counts one multiply-add as one FLOP (the convention of the paper's GFLOPs). Its tracer
sees fused attention as an opaque op and would count it as zero; the handles below give every
attention kernel its true cost (QK^T and attention x V).
"""
import contextlib
from typing import Dict

from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape

__all__ = [
    "attention_flop_jit",
    "roi_align_flop_jit",
    "ATTENTION_HANDLES",
    "flop_count_analysis",
    "method_flops",
]


def attention_flop_jit(inputs, outputs) -> int:
    """Multiply-adds of softmax(Q K^T) V for q (..., N, d), k (..., M, d), v (..., M, dv)."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = 1
    for s in q[:-2]:
        batch *= s
    n, d = q[-2], q[-1]
    m, dv = k[-2], v[-1]
    return batch * n * m * (d + dv)


def roi_align_flop_jit(inputs, outputs) -> int:
    """Bilinear RoIAlign: 4 multiply-adds per sample point, sampling_ratio^2 points per output bin.

    An adaptive sampling ratio (<= 0) is counted as 2x2 points per bin.
    """
    out = get_shape(outputs[0])  # (R, C, ph, pw)
    sampling = inputs[5].toIValue() if len(inputs) > 5 else 2
    sampling = sampling if sampling and sampling > 0 else 2
    n = 1
    for s in out:
        n *= s
    return n * sampling * sampling * 4


ATTENTION_HANDLES = {
    "aten::scaled_dot_product_attention": attention_flop_jit,
    "aten::_scaled_dot_product_flash_attention_for_cpu": attention_flop_jit,
    "aten::_scaled_dot_product_flash_attention": attention_flop_jit,
    "aten::_scaled_dot_product_efficient_attention": attention_flop_jit,
    "aten::_scaled_dot_product_cudnn_attention": attention_flop_jit,
}


def flop_count_analysis(model, inputs, extra_handles: Dict = None) -> FlopCountAnalysis:
    """fvcore's analysis with attention and RoIAlign handles (and any extra ones) registered.

    Args:
        model: a module taking tensors, or a detectron2 model taking a list of dicts.
        inputs: a tuple of tensors, or the list of dicts a detectron2 model takes.

    Elementwise ops (softmax, exp, adds, norms) are not counted, as is fvcore's default.
    """
    if isinstance(inputs, list):
        # detectron2's subclass flattens dict inputs and Instances outputs for the tracer.
        from detectron2.utils.analysis import FlopCountAnalysis as D2FlopCountAnalysis

        analysis = D2FlopCountAnalysis(model, inputs)
    else:
        analysis = FlopCountAnalysis(model, inputs)
    analysis.set_op_handle(**ATTENTION_HANDLES)
    analysis.set_op_handle(**{"torchvision::roi_align": roi_align_flop_jit})
    if extra_handles:
        analysis.set_op_handle(**extra_handles)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analysis


@contextlib.contextmanager
def method_flops(model):
    """Count FLOPs of the method as the paper does: each pruning layer's attention map once.

    The fast CPU kernel of a pruning layer recomputes the non-keyframe columns of QK^T from the
    log-sum-exp (a few percent more multiply-adds, less wall time). Inside this context every
    pruning attention uses the explicit path, whose count is the method's.
    """
    from evad_d2.modeling.backbone.attention import PruningAttention

    attns = [m for m in model.modules() if isinstance(m, PruningAttention)]
    saved = [a.importance_impl for a in attns]
    for a in attns:
        a.importance_impl = "explicit"
    try:
        yield model
    finally:
        for a, impl in zip(attns, saved):
            a.importance_impl = impl
