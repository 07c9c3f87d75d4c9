"""2-D sin-cos position tables and their resizing, on an explicit (n_time, n_freq) grid (docs/method.md §4, Decision 2)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    """(M,) positions -> (M, dim) [sin | cos] features, MAE's frequencies 1 / 10000^(2i/dim)."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim: int, grid: tuple[int, int], cls_token: bool = True) -> torch.Tensor:
    """Sin-cos table for a row-major (rows, cols) token grid.

    Half the channels encode the column index and half the row index (MAE/AudioMAE convention, so the result
    equals ``get_2d_sincos_pos_embed_flexible(dim, grid)``). With ``grid=(n_time, n_freq)`` this is the table on
    the true time-major geometry; the authors' code passes (n_freq, n_time), which is the ``reference`` layout.

    Returns:
        (1 + rows*cols, dim) float32 if ``cls_token`` (zero CLS row first), else (rows*cols, dim).
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs embed_dim divisible by 4, got {dim}")
    rows, cols = grid
    col_pos, row_pos = np.meshgrid(np.arange(cols), np.arange(rows))  # each (rows, cols)
    emb = np.concatenate([_sincos_1d(dim // 2, col_pos), _sincos_1d(dim // 2, row_pos)], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros((1, dim)), emb], axis=0)
    return torch.from_numpy(emb).float()


def resize_pos_embed(pos: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int],
                     num_prefix: int = 1) -> torch.Tensor:
    """Bilinearly resize a (1, prefix + T*F, D) table from ``old_grid`` to ``new_grid`` (both (n_time, n_freq)).

    Interpolation runs on the true time-major geometry, so shortening the input (ESC-50: 64x8 -> 32x8, Speech
    Commands: 64x8 -> 8x8) compresses time only, unlike the released ESC-50 loader's 16x32 view (docs/method.md §8).
    """
    if tuple(old_grid) == tuple(new_grid):
        return pos
    prefix, grid_tokens = pos[:, :num_prefix], pos[:, num_prefix:]
    t, f = old_grid
    if grid_tokens.shape[1] != t * f:
        raise ValueError(f"position table has {grid_tokens.shape[1]} grid rows, expected {t}x{f}={t * f}")
    d = grid_tokens.shape[-1]
    x = grid_tokens.reshape(1, t, f, d).permute(0, 3, 1, 2)  # (1, D, T, F)
    x = F.interpolate(x.float(), size=tuple(new_grid), mode="bilinear", align_corners=False).to(pos.dtype)
    x = x.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], d)  # back to time-major tokens
    return torch.cat([prefix, x], dim=1)
