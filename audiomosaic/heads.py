"""Probe heads (docs/method.md §9): linear on one layer, SUPERB weighted sum, attentive pooling — one implementation.

Heads read *pooled per-entry features* so that a frozen encoder is run once over the data and every head trains
from the cached features:

- ``mean``      (B, L, D): token mean (CLS included) of each entry,
- ``norm_mean`` (B, L, D): token mean of each entry's tokens standardised per token (zero mean, unit variance).

The entries are the 12 block outputs plus the final output (which repeats the last block, the final norm being an
Identity): L = depth + 1 = 13 at ViT-B. Because average pooling is linear, the weighted sum of pooled entries
equals the pooling of the weighted token sum; and because a LayerNorm's affine part commutes with the token mean,
``LN_l`` then pooling equals ``w_l * norm_mean + b_l`` — so both probes are exact on pooled features.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from audiomosaic.model import LN_EPS, AudioMosaic

KINDS = ("linear", "weighted", "attentive")


@torch.no_grad()
def pooled_entries(model: AudioMosaic, spec: torch.Tensor,
                   keep_idx: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Run the (frozen) encoder once and pool every entry. spec (B, 1, T, F) -> dict of (B, depth + 1, D)."""
    blocks = model.forward_intermediates(spec, keep_idx=keep_idx)  # depth x (B, N, D)
    entries = blocks + [blocks[-1]]  # final output = last block (no final norm)
    tokens = torch.stack(entries, dim=1).float()  # (B, L, N, D)
    std = F.layer_norm(tokens, tokens.shape[-1:], eps=LN_EPS)
    return {"mean": tokens.mean(dim=2), "norm_mean": std.mean(dim=2)}


class ProbeHead(nn.Module):
    """LayerNorm + Linear on one entry, on a softmax-weighted sum of entries, or on attentive pooling of entries.

    Args:
        dim: feature width D.
        num_classes: output classes.
        kind: ``linear`` (entry ``layer``), ``weighted`` (softmax over ``num_entries`` weights), ``attentive``
            (per-entry LayerNorm, one learned query, bias-free key/value projections scaled by 1/sqrt(D)).
        num_entries: L, depth + 1.
        layer: entry index for ``linear`` (negative counts from the end; -1 = final output).
    """

    def __init__(self, dim: int, num_classes: int, kind: str = "linear", num_entries: int = 13, layer: int = -1):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown probe kind {kind!r}; allowed: {', '.join(KINDS)}")
        if not -num_entries <= layer < num_entries:
            raise ValueError(f"probe layer {layer} outside [-{num_entries}, {num_entries - 1}]")
        self.kind, self.layer, self.dim = kind, layer % num_entries, dim
        if kind == "weighted":
            self.layer_weights = nn.Parameter(torch.zeros(num_entries))  # uniform softmax at start
        if kind == "attentive":
            self.entry_norm_w = nn.Parameter(torch.ones(num_entries, dim))
            self.entry_norm_b = nn.Parameter(torch.zeros(num_entries, dim))
            self.query = nn.Parameter(torch.randn(1, dim) * 0.02)
            self.key = nn.Linear(dim, dim, bias=False)
            self.value = nn.Linear(dim, dim, bias=False)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.head = nn.Linear(dim, num_classes)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def init_norm_from(self, norm: nn.LayerNorm) -> None:
        """Start the LayerNorm from the pre-trained ``fc_norm`` (the authors' linear probe does)."""
        self.norm.load_state_dict(norm.state_dict())

    def pre_logits(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.kind == "linear":
            x = feats["mean"][:, self.layer]
        elif self.kind == "weighted":
            x = torch.einsum("l,bld->bd", self.layer_weights.softmax(0), feats["mean"])
        else:
            e = feats["norm_mean"] * self.entry_norm_w + self.entry_norm_b  # (B, L, D): LN_l then pooling
            scores = (self.key(e) @ self.query.T).squeeze(-1) / math.sqrt(self.dim)  # (B, L)
            x = torch.einsum("bl,bld->bd", scores.softmax(-1), self.value(e))
        return self.norm(x)

    def forward(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """feats: ``pooled_entries`` output -> logits (B, num_classes)."""
        return self.head(self.pre_logits(feats))
