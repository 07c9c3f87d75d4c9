"""NT-Xent (SimCLR) over two views (docs/method.md §6). Pure functions of embeddings; the cross-rank gather is passed in.

For local embeddings z_a, z_b (n, d) and their gathered copies over all ranks (m = n * world, d), the row of
anchor a_i holds sim(a_i, every gathered b) and sim(a_i, every gathered a), divided by ``tau``, with -inf in place
of sim(a_i, a_i) (2m columns, 2m - 1 candidates); its target is b_i, at column ``offset + i`` where
``offset = rank * n``. Symmetrically for b_i. The loss is the mean
cross-entropy over the 2n anchors, which equals the single-process loss on the combined batch once every rank's
loss is averaged (what DDP's gradient averaging does).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Gather = Callable[[torch.Tensor], torch.Tensor]  # (n, d) local -> (n * world, d), differentiable


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def nt_xent_logits(z_a: torch.Tensor, z_b: torch.Tensor, tau: float = 0.1, gather: Gather | None = None,
                   offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets of the symmetric NT-Xent, for n local pairs among m gathered ones (m = n * world).

    Args:
        z_a, z_b: (n, d) embeddings of the two views (not yet normalised).
        tau: temperature.
        gather: differentiable all-gather along dim 0, (n, d) -> (m, d) (identity in one process), called on the
            normalised ``z_a`` and then on the normalised ``z_b``.
        offset: index of this rank's first example in the gathered batch (rank * n).
    Returns:
        logits (2n, 2m) float32: rows a_0..a_{n-1}, b_0..b_{n-1}; columns [the other view's m | the same view's m],
        the anchor's own column in the second block is -inf (so 2m - 1 candidates remain);
        targets (2n,) long: ``offset + i`` for both a_i and b_i (the positive sits in the first block).
    """
    if z_a.shape != z_b.shape or z_a.ndim != 2:
        raise ValueError(f"z_a and z_b must both be (n, d), got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
    gather = gather or _identity
    z_a, z_b = F.normalize(z_a.float(), dim=1), F.normalize(z_b.float(), dim=1)
    all_a, all_b = gather(z_a), gather(z_b)  # (m, d)
    n, m = z_a.shape[0], all_a.shape[0]
    idx = torch.arange(n, device=z_a.device) + offset  # own position in the gathered batch
    self_mask = F.one_hot(idx, m).bool()  # (n, m): exclude sim(a_i, a_i)

    def rows(q: torch.Tensor, pos_bank: torch.Tensor, neg_bank: torch.Tensor) -> torch.Tensor:
        cross = q @ pos_bank.T / tau  # (n, m): column offset+i is the positive
        same = (q @ neg_bank.T / tau).masked_fill(self_mask, float("-inf"))
        return torch.cat([cross, same], dim=1)  # (n, 2m); the -inf column drops out of the softmax

    logits = torch.cat([rows(z_a, all_b, all_a), rows(z_b, all_a, all_b)], dim=0)  # (2n, 2m)
    return logits, torch.cat([idx, idx])


def nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, tau: float = 0.1, gather: Gather | None = None,
            offset: int = 0) -> torch.Tensor:
    """Symmetric NT-Xent loss (scalar), averaged over the 2n local anchors. See :func:`nt_xent_logits`."""
    logits, target = nt_xent_logits(z_a, z_b, tau, gather, offset)
    return F.cross_entropy(logits, target)


def contrastive_accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy of picking the positive among all candidates (logged during pre-training)."""
    return (logits.argmax(dim=1) == target).float().mean()
