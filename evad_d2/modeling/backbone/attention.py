"""Multi-head self-attention that can also score tokens for pruning.

Layers that do not prune use PyTorch's fused ``scaled_dot_product_attention``. A pruning layer
needs, besides the output, the attention each non-keyframe token receives (eq. 3). On the CPU the
flash kernel returns each query's log-sum-exp with the output, from which the needed columns of
the attention map are recomputed block by block without ever holding the N x N matrix
(``importance_from_logsumexp``). Elsewhere the rows are
recomputed block by block. ``impl="explicit"`` materialises softmax(QK^T) (reference path).
"""
import contextlib
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .pruning import importance_by_recompute, importance_from_attention, importance_from_logsumexp

__all__ = ["PruningAttention", "IMPORTANCE_IMPLS"]

IMPORTANCE_IMPLS = ("auto", "logsumexp", "recompute", "explicit")


def _flash_cpu_available() -> bool:
    return hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")


@contextlib.contextmanager
def _float32_scores(q: Tensor):
    """No gradients and no autocast while scoring tokens.

    Under bf16/fp16 autocast the attention runs in half precision, but eq. 3 sums N attention
    probabilities per token, and the importances the ranking compares differ by less than half
    precision resolves: scores are accumulated in float32 (the q/k they start from stay rounded).
    """
    with torch.no_grad(), torch.autocast(q.device.type, enabled=False):
        yield


class PruningAttention(nn.Module):
    """VideoMAE attention: ``qkv`` without bias plus separate ``q_bias``/``v_bias`` (key bias 0).

    Args:
        dim: token width.
        num_heads: attention heads.
        qkv_bias: learn query/value biases.
        importance_impl: how a pruning layer computes eq. 3 (one of ``IMPORTANCE_IMPLS``).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, importance_impl: str = "auto"):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if importance_impl not in IMPORTANCE_IMPLS:
            raise ValueError(f"importance_impl must be one of {IMPORTANCE_IMPLS}, got {importance_impl!r}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.importance_impl = importance_impl
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        self.proj = nn.Linear(dim, dim)

    def _qkv(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        bias = None
        if self.q_bias is not None:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        b, n, _ = x.shape
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, d)
        return q, k, v

    def forward(
        self, x: Tensor, num_keyframe: Optional[int] = None, keyframe_weight: float = 1.0
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """
        Args:
            x: (B, N, C) tokens, keyframe tokens first.
            num_keyframe: N1; when given, also return the importance of the non-keyframe tokens.
            keyframe_weight: w_kf of eq. 3.

        Returns:
            (B, N, C) attention output (after ``proj``) and (B, N - N1) importance or None.
        """
        b, n, c = x.shape
        q, k, v = self._qkv(x)
        importance = None
        if num_keyframe is None:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            impl = self._resolve_impl(q)
            if impl == "explicit":
                attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.head_dim**-0.5, dim=-1)
                out = torch.matmul(attn, v)
                with _float32_scores(q):
                    importance = importance_from_attention(attn.detach().float(), num_keyframe, keyframe_weight)
            elif impl == "logsumexp":
                out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)[:2]
                with _float32_scores(q):
                    importance = importance_from_logsumexp(
                        q.detach().float(), k.detach().float(), lse.detach().float(), num_keyframe, keyframe_weight
                    )
            else:
                out = F.scaled_dot_product_attention(q, k, v)
                with _float32_scores(q):
                    importance = importance_by_recompute(q.detach().float(), k.detach().float(), num_keyframe, keyframe_weight)
        out = out.transpose(1, 2).reshape(b, n, c)
        return self.proj(out), importance

    def attention_probs(self, x: Tensor) -> Tensor:
        """(B, heads, N, N) softmax(QK^T / sqrt(d)) of the tokens ``x`` (B, N, C), rows are queries.

        Not used by ``forward``; for inspecting a layer (e.g. from a forward hook that receives
        the same ``x``), as the decoder-attention visualisation does.
        """
        q, k, _ = self._qkv(x)
        return torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.head_dim**-0.5, dim=-1)

    def _resolve_impl(self, q: Tensor) -> str:
        if self.importance_impl != "auto":
            return self.importance_impl
        if q.device.type == "cpu" and q.dtype in (torch.float32, torch.bfloat16) and _flash_cpu_available():
            return "logsumexp"
        return "recompute"
