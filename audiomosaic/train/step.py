"""The one optimiser step of every engine (pre-training, fine-tuning, probes, the step benchmark).

A step: for each micro-batch, ``prepare`` (outside autocast: augmentation and fbank stay in fp32) then ``forward``
under autocast; the loss, divided by the number of micro-batches, is scaled and back-propagated (under DDP the
gradients are all-reduced on the last micro-batch only, docs/style.md 8); then unscale (a no-op unless fp16), the
gradient norm (clipped when ``grad_clip > 0``), the optimiser step, the scaler update and ``zero_grad``. Nothing
here synchronises with the host: every returned value is a device tensor.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn as nn

from audiomosaic.train.runtime import autocast


def split_batch(batch: Any, parts: int) -> list[Any]:
    """``parts`` micro-batches of a tensor, a tuple/list of tensors or a dict of tensors (split on dim 0); ``None``
    entries stay ``None`` in every micro-batch."""
    if parts <= 1:
        return [batch]
    if batch is None:
        return [None] * parts
    if isinstance(batch, torch.Tensor):
        return list(batch.chunk(parts))
    if isinstance(batch, dict):
        chunks = {k: split_batch(v, parts) for k, v in batch.items()}
        n = min(len(c) for c in chunks.values())
        return [{k: c[i] for k, c in chunks.items()} for i in range(n)]
    columns = [split_batch(v, parts) for v in batch]
    return [type(batch)(c[i] for c in columns) for i in range(min(len(c) for c in columns))]


def optimizer_step(micro_batches: Sequence[Any], forward: Callable[[Any], dict[str, torch.Tensor]],
                   optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, params: Iterable[nn.Parameter], *,
                   device: torch.device, dtype: torch.dtype, grad_clip: float = 0.0,
                   prepare: Callable[[Any], Any] | None = None, ddp: nn.Module | None = None
                   ) -> dict[str, torch.Tensor]:
    """One optimiser step over ``micro_batches`` (gradient accumulation when there are several).

    Args:
        forward: micro-batch (after ``prepare``) -> dict with a 0-d ``loss`` and any other 0-d statistics.
        params: the parameters whose gradient norm is reported (and clipped); those without a gradient are skipped.
        prepare: run on each micro-batch outside autocast and without gradients (augmentation, fbank, masks).
        ddp: the DistributedDataParallel module, so that all but the last micro-batch skip the all-reduce.
    Returns:
        the mean over micro-batches of every statistic ``forward`` returned (detached) and ``grad_norm``.
    """
    n = len(micro_batches)
    stats: list[dict[str, torch.Tensor]] = []
    for i, mb in enumerate(micro_batches):
        with ddp.no_sync() if ddp is not None and i < n - 1 else nullcontext():
            if prepare is not None:
                with torch.no_grad():
                    mb = prepare(mb)
            with autocast(device, dtype):
                out = forward(mb)
            scaler.scale(out["loss"] / n).backward()
        stats.append({k: v.detach() for k, v in out.items()})
    scaler.unscale_(optimizer)
    with_grad = [p for p in params if p.grad is not None]
    if grad_clip > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(with_grad, grad_clip)
    else:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in with_grad])
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    means = {k: torch.stack([s[k] for s in stats]).mean() for k in stats[0]}
    return {**means, "grad_norm": grad_norm}
