"""Position tables: VideoMAE's 1D sin-cos table and its resizing to other token grids."""
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["sinusoid_table", "resize_pos_table"]


def sinusoid_table(num_positions: int, dim: int) -> Tensor:
    """VideoMAE's fixed table: position p, channel c -> sin/cos(p / 10000^(2*(c//2)/dim)).

    Even channels take the sine, odd channels the cosine, over the *flattened* token index.

    Returns:
        (num_positions, dim) float32.
    """
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    rates = torch.pow(10000.0, 2.0 * (torch.arange(dim) // 2).to(torch.float64) / dim)
    angles = pos / rates
    table = torch.empty(num_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles[:, 0::2])
    table[:, 1::2] = torch.cos(angles[:, 1::2])
    return table.float()


def resize_pos_table(table: Tensor, src_grid: Sequence[int], dst_grid: Sequence[int]) -> Tensor:
    """Resize a (T*H*W, C) table laid out on ``src_grid`` to ``dst_grid``.

    Space is resized bicubically (as the official code does for other input sizes), time
    linearly. Returns the table unchanged when the grids agree.

    Returns:
        (T'*H'*W', C) table.
    """
    src_grid, dst_grid = tuple(src_grid), tuple(dst_grid)
    if src_grid == dst_grid:
        return table
    t, h, w = src_grid
    nt, nh, nw = dst_grid
    c = table.shape[-1]
    x = table.reshape(t, h, w, c).permute(0, 3, 1, 2)  # (T, C, H, W)
    if (h, w) != (nh, nw):
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False)
    if t != nt:
        x = x.permute(2, 3, 1, 0).reshape(nh * nw, c, t)
        x = F.interpolate(x, size=nt, mode="linear", align_corners=False)
        x = x.reshape(nh, nw, c, nt).permute(3, 2, 0, 1)
    return x.permute(0, 2, 3, 1).reshape(nt * nh * nw, c)
