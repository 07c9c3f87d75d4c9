"""Token masks for the two views (docs/method.md §5). Pure functions: tensors and explicit grids in, index tensors out.

Tokens are time-major: token k = t * n_freq + f (CLS excluded). Every function returns

- ``keep_idx``   (B, n_keep) long: indices of the visible tokens, in ascending order,
- ``restore_idx`` (B, N) long: ``restore_idx[b, k]`` is the position of token k in ``[keep ; dropped]``,
- ``mask``        (B, N) bool: True where a token is dropped (MAE convention),

with N = n_time * n_freq. Masks are drawn independently for each example from uniform noise + argsort (the
authors' and MAE's idiom), on ``generator`` when one is given.

Two layouts (docs/method.md Decision 1):

- ``paper``: the geometry the paper describes, on the true (n_time, n_freq) grid. Time masking drops whole time
  columns (all frequencies of a time step), frequency masking drops whole frequency rows.
  At 1024x128 (grid 64x8) with ratios 0.6/0.4: 25 columns -> 200 tokens, 4 rows -> 256 tokens.
- ``reference``: what the released code does (docs/method.md §5.3). It views the time-major sequence as an
  (A, B) = (n_freq, n_time) array, i.e. A = n_freq "blocks" of B = n_time consecutive tokens. The "time" branch
  keeps floor(A (1 - r)) whole blocks; the "freq" branch keeps floor(B (1 - r)) of the B positions within a block
  and repeats that choice in every block. At 1024x128: 3 of 8 blocks -> 192 tokens, 38 of 64 -> 304 tokens.
"""
from __future__ import annotations

import torch

from audiomosaic.config import Layout, MaskMode, choices

Grid = tuple[int, int]  # (n_time, n_freq)
Masks = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # keep_idx, restore_idx, mask

LAYOUTS: tuple[str, ...] = choices(Layout)  # MaskConfig.layout's choice set (declared in config.py)
MODES: tuple[str, ...] = choices(MaskMode)  # MaskConfig.mode's


def _check_ratio(ratio: float, name: str = "ratio") -> None:
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask {name}={ratio} is outside [0, 1)")


def _check_grid(grid: Grid) -> None:
    if len(grid) != 2 or min(grid) < 1:
        raise ValueError(f"grid must be (n_time, n_freq) with positive sizes, got {grid}")


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown mask layout {layout!r}; allowed: {', '.join(LAYOUTS)}")


def _noise(batch: int, n: int, generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
    if generator is not None:
        # Draw on the generator's device, then move, so a CPU generator seeds masks for CUDA inputs too.
        return torch.rand(batch, n, generator=generator, device=generator.device).to(device)
    return torch.rand(batch, n, device=device)


def _keep_units(batch: int, n_units: int, ratio: float, generator: torch.Generator | None,
                device: torch.device | str) -> torch.Tensor:
    """(B, n_keep) sorted indices of the units kept when a fraction ``ratio`` of ``n_units`` is dropped."""
    n_keep = int(n_units * (1.0 - ratio))
    n_keep = max(n_keep, 1)  # never an empty view
    ids = torch.argsort(_noise(batch, n_units, generator, device), dim=1)[:, :n_keep]
    return ids.sort(dim=1).values


def masks_from_keep(keep_idx: torch.Tensor, n_tokens: int) -> Masks:
    """Complete (keep_idx, restore_idx, mask) from sorted visible indices (B, n_keep)."""
    batch = keep_idx.shape[0]
    mask = torch.ones(batch, n_tokens, dtype=torch.bool, device=keep_idx.device)
    mask.scatter_(1, keep_idx, False)
    # order = [kept ascending ; dropped ascending]; restore = inverse permutation of that order.
    order = torch.argsort(mask.to(torch.int8), dim=1, stable=True)
    restore_idx = torch.argsort(order, dim=1)
    return keep_idx, restore_idx, mask


def time_mask(batch: int, grid: Grid, ratio: float, generator: torch.Generator | None = None,
              layout: str = "paper", device: torch.device | str = "cpu") -> Masks:
    """Drop a fraction ``ratio`` of time units; each kept unit keeps all of its frequencies.

    Args:
        batch: number of independent masks B.
        grid: (n_time, n_freq) patch grid.
        ratio: fraction of time units dropped, in [0, 1).
        generator: optional torch.Generator for reproducible masks.
        layout: ``paper`` (time units are columns) or ``reference`` (the authors' 8-block pattern).
    Returns:
        keep_idx (B, n_keep), restore_idx (B, N), mask (B, N).
    """
    _check_ratio(ratio, "ratio_time"), _check_grid(grid), _check_layout(layout)
    n_time, n_freq = grid
    n = n_time * n_freq
    if layout == "paper":
        cols = _keep_units(batch, n_time, ratio, generator, device)  # (B, kt)
        offs = torch.arange(n_freq, device=device)
        keep = (cols[:, :, None] * n_freq + offs).flatten(1)  # (B, kt * n_freq), sorted
    else:
        # The code's (A, B) = (n_freq, n_time) view: unit a is the run of tokens [a*B, (a+1)*B).
        a_units, b_len = n_freq, n_time
        blocks = _keep_units(batch, a_units, ratio, generator, device)  # (B, ka)
        offs = torch.arange(b_len, device=device)
        keep = (blocks[:, :, None] * b_len + offs).flatten(1)
    return masks_from_keep(keep, n)


def freq_mask(batch: int, grid: Grid, ratio: float, generator: torch.Generator | None = None,
              layout: str = "paper", device: torch.device | str = "cpu") -> Masks:
    """Drop a fraction ``ratio`` of frequency units; each kept unit keeps all of its time steps.

    ``paper`` drops whole frequency rows of the true grid; ``reference`` keeps a subset of the positions within
    each block of n_time consecutive tokens and repeats it in every block (docs/method.md §5.3). Same returns as
    :func:`time_mask`.
    """
    _check_ratio(ratio, "ratio_freq"), _check_grid(grid), _check_layout(layout)
    n_time, n_freq = grid
    n = n_time * n_freq
    if layout == "paper":
        rows = _keep_units(batch, n_freq, ratio, generator, device)  # (B, kf)
        ts = torch.arange(n_time, device=device)
        keep = (ts[None, :, None] * n_freq + rows[:, None, :]).flatten(1)  # (B, n_time * kf), sorted
    else:
        a_units, b_len = n_freq, n_time
        pos = _keep_units(batch, b_len, ratio, generator, device)  # (B, kb)
        blocks = torch.arange(a_units, device=device)
        keep = (blocks[None, :, None] * b_len + pos[:, None, :]).flatten(1)
    return masks_from_keep(keep, n)


def time_freq_mask(batch: int, grid: Grid, ratio_time: float, ratio_freq: float,
                   generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> Masks:
    """Fine-tuning token mask (docs/method.md §8, AudioMAE's ``random_masking_2d``) on the true grid.

    Independently drop a fraction ``ratio_time`` of time columns and ``ratio_freq`` of frequency rows; a token is
    kept only if both its column and its row are kept. At grid 64x8 with 0.2/0.2: 51 x 6 = 306 tokens.
    Same returns as :func:`time_mask`.
    """
    _check_ratio(ratio_time, "ratio_time"), _check_ratio(ratio_freq, "ratio_freq"), _check_grid(grid)
    n_time, n_freq = grid
    cols = _keep_units(batch, n_time, ratio_time, generator, device)  # (B, kt), sorted
    rows = _keep_units(batch, n_freq, ratio_freq, generator, device)  # (B, kf), sorted
    keep = (cols[:, :, None] * n_freq + rows[:, None, :]).flatten(1)  # (B, kt * kf), time-major so sorted
    return masks_from_keep(keep, n_time * n_freq)


def unstructured_mask(batch: int, grid: Grid, ratio: float, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> Masks:
    """Keep floor(N (1 - ratio)) uniformly random tokens per example (docs/method.md §5.4)."""
    _check_ratio(ratio), _check_grid(grid)
    n = grid[0] * grid[1]
    return masks_from_keep(_keep_units(batch, n, ratio, generator, device), n)


def no_mask(batch: int, grid: Grid, device: torch.device | str = "cpu") -> Masks:
    """Every token visible (eval mode)."""
    _check_grid(grid)
    n = grid[0] * grid[1]
    return masks_from_keep(torch.arange(n, device=device).expand(batch, n).contiguous(), n)


def view_masks(mode: str, batch: int, grid: Grid, *, ratio_time: float = 0.6, ratio_freq: float = 0.4,
               ratio: float = 0.75, layout: str = "paper", generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> tuple[Masks, Masks]:
    """Masks for the two views of a positive pair.

    ``tf`` (default): view A time-masked at ``ratio_time``, view B frequency-masked at ``ratio_freq``.
    ``tt``/``ff``: both views time (frequency) masked, independently. ``unstructured``: both random at ``ratio``.
    ``none``: no masking.
    """
    if mode not in MODES:
        raise ValueError(f"unknown masking mode {mode!r}; allowed: {', '.join(MODES)}")
    kinds = {"tf": ("time", "freq"), "tt": ("time", "time"), "ff": ("freq", "freq"),
             "unstructured": ("unstructured", "unstructured"), "none": ("none", "none")}[mode]
    kw = dict(ratio_time=ratio_time, ratio_freq=ratio_freq, ratio=ratio, layout=layout, generator=generator,
              device=device)
    return single_mask(kinds[0], batch, grid, **kw), single_mask(kinds[1], batch, grid, **kw)


def single_mask(kind: str, batch: int, grid: Grid, *, ratio_time: float = 0.6, ratio_freq: float = 0.4,
                ratio: float = 0.75, layout: str = "paper", generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> Masks:
    """One mask of ``kind`` in {time, freq, unstructured, none} (inference-time masking, docs/method.md §10)."""
    kw = dict(generator=generator, device=device)
    if kind == "time":
        return time_mask(batch, grid, ratio_time, layout=layout, **kw)
    if kind == "freq":
        return freq_mask(batch, grid, ratio_freq, layout=layout, **kw)
    if kind == "unstructured":
        return unstructured_mask(batch, grid, ratio, **kw)
    if kind == "none":
        return no_mask(batch, grid, device)
    raise ValueError(f"unknown mask kind {kind!r}; allowed: time, freq, unstructured, none")


def gather_tokens(x: torch.Tensor, keep_idx: torch.Tensor) -> torch.Tensor:
    """Select visible tokens. x (B, N, D), keep_idx (B, n_keep) -> (B, n_keep, D)."""
    return torch.gather(x, 1, keep_idx[:, :, None].expand(-1, -1, x.shape[-1]))


def restore_tokens(x_keep: torch.Tensor, restore_idx: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Inverse of :func:`gather_tokens`: scatter (B, n_keep, D) back to (B, N, D), ``fill`` where dropped."""
    b, k, d = x_keep.shape
    n = restore_idx.shape[1]
    full = torch.cat([x_keep, x_keep.new_full((b, n - k, d), fill)], dim=1)  # [kept ; dropped]
    return torch.gather(full, 1, restore_idx[:, :, None].expand(-1, -1, d))
