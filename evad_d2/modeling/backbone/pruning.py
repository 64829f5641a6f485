"""Keyframe-centric token pruning (paper section 3.2, eq. 3) and the token-map restore (3.3).

Two rules score the non-keyframe tokens a pruning layer ranks (``PRUNING_SCORES``): ``"attention"``,
the paper's eq. 3 (the attention each token receives, keyframe queries weighted by w_kf), and
``"random"``, the baseline of random dropping (:func:`random_scores`: uniform scores, so a uniformly
random subset of the same size). Either way every keyframe token is kept and the same number of
tokens survives.

Token layout used throughout: the ``N1`` keyframe tokens come first (in raster order), followed by
the non-keyframe tokens. ``index`` holds, for every token, its flat position in the
``(T', H', W')`` token grid, so pruned sequences can always be put back in place.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = [
    "PRUNING_SCORES",
    "num_kept_tokens",
    "random_scores",
    "keyframe_first_order",
    "importance_from_attention",
    "importance_from_logsumexp",
    "importance_by_recompute",
    "select_tokens",
    "restore_token_map",
]

# How a pruning layer ranks the non-keyframe tokens (config key MODEL.EVAD.PRUNING_SCORE).
PRUNING_SCORES = ("attention", "random")


def num_kept_tokens(num_tokens: int, keep_rate: float) -> int:
    """Tokens left after a pruning layer: ``ceil(rho * N)``.

    The product is rounded to 6 decimals first so that binary float error (0.7 * 1000 =
    700.0000000000001) does not keep one token more than the arithmetic says.
    """
    if not 0.0 < keep_rate <= 1.0:
        raise ValueError(f"keep rate must be in (0, 1], got {keep_rate}")
    return math.ceil(round(keep_rate * num_tokens, 6))


def keyframe_first_order(grid: Tuple[int, int, int], keyframe_slice: int, device=None) -> Tensor:
    """Flat grid positions with the keyframe slice first, then the other slices in order.

    Args:
        grid: token grid ``(T', H', W')``.
        keyframe_slice: temporal token index of the keyframe (``0 <= k < T'``).

    Returns:
        (T'*H'*W',) long tensor: a permutation of ``arange(T'*H'*W')``.
    """
    t, h, w = grid
    if not 0 <= keyframe_slice < t:
        raise ValueError(f"keyframe slice {keyframe_slice} outside the {t} temporal token slices")
    hw = h * w
    positions = torch.arange(t * hw, device=device)
    kf = positions[keyframe_slice * hw : (keyframe_slice + 1) * hw]
    rest = torch.cat([positions[: keyframe_slice * hw], positions[(keyframe_slice + 1) * hw :]])
    return torch.cat([kf, rest])


def _query_weights(num_queries: int, num_keyframe: int, keyframe_weight: float, ref: Tensor) -> Tensor:
    w = torch.ones(num_queries, dtype=ref.dtype, device=ref.device)
    w[:num_keyframe] = keyframe_weight
    return w


def importance_from_attention(attn: Tensor, num_keyframe: int, keyframe_weight: float = 1.0) -> Tensor:
    """Paper eq. 3 from an explicit attention map.

    ``I_j = 1/N * sum_i w_i * mean_h attn[h, i, j]`` with ``w_i = w_kf`` for keyframe queries
    (the first ``num_keyframe`` rows) and 1 otherwise, for the non-keyframe columns ``j``.

    Args:
        attn: (B, heads, N, N) softmax-normalised attention (rows are queries).
        num_keyframe: N1, the number of leading keyframe tokens.
        keyframe_weight: w_kf.

    Returns:
        (B, N - N1) importance of the non-keyframe tokens.
    """
    n = attn.shape[-1]
    w = _query_weights(n, num_keyframe, keyframe_weight, attn)
    cols = attn[..., num_keyframe:]  # (B, h, N, N2)
    return torch.einsum("bhij,i->bj", cols, w) / (n * attn.shape[1])


def importance_from_logsumexp(
    q: Tensor, k: Tensor, lse: Tensor, num_keyframe: int, keyframe_weight: float = 1.0, chunk: int = 128
) -> Tensor:
    """Eq. 3 without materialising the attention matrix, given each query's log-sum-exp.

    ``attn[h, i, j] = exp(q_i . k_j * scale - lse[h, i])``, so only the non-keyframe columns are
    computed, a block of queries at a time, in place, and the weighted sum over queries is a
    matrix product. Equal to :func:`importance_from_attention` up to float rounding. On the CPU
    it costs about one attention call at 1568 tokens (blocks of 128 queries stay in cache:
    measured 2x faster than blocks of 512).

    Args:
        q, k: (B, heads, N, d) queries and keys (as fed to attention).
        lse: (B, heads, N) log-sum-exp of each query's scaled logits.
        num_keyframe: N1.
        keyframe_weight: w_kf.
        chunk: queries per block (bounds memory at B*heads*chunk*N2).

    Returns:
        (B, N - N1) importance of the non-keyframe tokens.
    """
    b, h, n, d = q.shape
    w = _query_weights(n, num_keyframe, keyframe_weight, q)
    k_nk = k[:, :, num_keyframe:].transpose(-2, -1) * d**-0.5  # (B, h, d, N2), scale folded in
    total = q.new_zeros(b, h, 1, n - num_keyframe)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        probs = torch.matmul(q[:, :, start:stop], k_nk)
        probs.sub_(lse[:, :, start:stop, None]).exp_()
        total += torch.matmul(w[start:stop].expand(b, h, 1, stop - start), probs)
    return total.sum(dim=(1, 2)) / (n * h)


def importance_by_recompute(q: Tensor, k: Tensor, num_keyframe: int, keyframe_weight: float = 1.0, chunk: int = 512) -> Tensor:
    """Eq. 3 by recomputing softmax rows block by block (any device; no log-sum-exp needed)."""
    b, h, n, d = q.shape
    scale = d**-0.5
    w = _query_weights(n, num_keyframe, keyframe_weight, q)
    total = q.new_zeros(b, n - num_keyframe)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        probs = torch.softmax(torch.matmul(q[:, :, start:stop], k.transpose(-2, -1)) * scale, dim=-1)
        total += torch.einsum("bhij,i->bj", probs[..., num_keyframe:], w[start:stop])
    return total / (n * h)


def random_scores(batch: int, num_scores: int, *, device=None, generator: Optional[torch.Generator] = None) -> Tensor:
    """Scores of the random rule: i.i.d. uniform [0, 1), so the top ``k`` are a uniformly random
    ``k``-subset (in random order) of the non-keyframe tokens.

    Args:
        batch: B.
        num_scores: N - N1, the non-keyframe tokens.
        generator: the random stream (None: torch's global one); on ``device``.

    Returns:
        (B, N - N1) float32 scores, for :func:`select_tokens`.
    """
    return torch.rand(batch, num_scores, device=device, generator=generator)


def select_tokens(x: Tensor, index: Tensor, importance: Tensor, num_keyframe: int, num_keep: int) -> Tuple[Tensor, Tensor]:
    """Keep every keyframe token and the ``num_keep - N1`` most important non-keyframe tokens.

    Kept non-keyframe tokens come out in descending importance (``torch.topk`` order), which is
    also the official implementation's order.

    Args:
        x: (B, N, C) tokens, keyframe tokens first.
        index: (B, N) grid positions of the tokens.
        importance: (B, N - N1) scores of the non-keyframe tokens.
        num_keyframe: N1.
        num_keep: total tokens to keep (>= N1).

    Returns:
        (B, num_keep, C) tokens and (B, num_keep) their grid positions.
    """
    n = x.shape[1]
    num_keep = min(max(num_keep, num_keyframe), n)
    k = num_keep - num_keyframe
    top = torch.topk(importance, k, dim=1, largest=True, sorted=True).indices + num_keyframe
    kf = torch.arange(num_keyframe, device=x.device).expand(x.shape[0], -1)
    order = torch.cat([kf, top], dim=1)
    x = torch.gather(x, 1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    return x, torch.gather(index, 1, order)


def restore_token_map(tokens: Tensor, index: Tensor, grid: Sequence[int], fill: Optional[Tensor] = None) -> Tensor:
    """Put surviving tokens back at their spatio-temporal places (paper 3.3).

    Args:
        tokens: (B, M, C) surviving tokens.
        index: (B, M) long, flat position of each token in the ``(T', H', W')`` grid.
        grid: ``(T', H', W')``.
        fill: optional (C,) vector written where tokens were dropped (zeros when None).

    Returns:
        (B, C, T', H', W') feature map.
    """
    b, m, c = tokens.shape
    t, h, w = grid
    n = t * h * w
    if index.shape != (b, m):
        raise ValueError(f"index shape {tuple(index.shape)} does not match tokens {tuple(tokens.shape)}")
    if fill is None:
        canvas = tokens.new_zeros(b, n, c)
    else:
        canvas = fill.to(tokens.dtype).expand(b, n, c).clone()
    canvas = canvas.scatter(1, index.unsqueeze(-1).expand(-1, -1, c), tokens)
    return canvas.transpose(1, 2).reshape(b, c, t, h, w)
