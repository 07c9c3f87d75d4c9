"""The audio prefix: encoder tokens -> pooled, scaled, normalised, projected LM input embeddings (docs/method.md §12).

The authors' path (``LTULlamaModel.forward``, ``audio_input`` branch) on a ViT-B at 1024 x 128:

    tokens (B, 513, 768) -> per-token norm -> drop CLS (B, 512, 768) -> reshape (B, 8, 64, 768).mean(1)
    -> avg_pool2d((2, 1)) (B, 32, 768) -> / 50 -> LayerNorm(no affine) -> Linear(768, H)

The reshape came from CAV-MAE, whose tokens are frequency-major (8 frequency rows of 64 time steps), where it
averages over frequency. AudioMosaic's tokens are time-major (k = t * 8 + f), so the same reshape averages over
the 8 consecutive 1.28-s time blocks: token j of the 64 is (time offset t % 8, frequency f), and the pool then
pairs neighbouring frequency rows. ``pooling="reference"`` is that formula; ``pooling="time"`` averages over
frequency per time step and then pools time, so the prefix is a time sequence.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from audiomosaic.alm.config import PrefixConfig
from audiomosaic.model import LN_EPS, AudioMosaic


def pool_tokens(tokens: torch.Tensor, grid: tuple[int, int], pooling: str = "reference", groups: int = 8,
                stride: int = 2) -> torch.Tensor:
    """Pool time-major patch tokens (CLS already dropped) into the prefix tokens.

    Args:
        tokens: (B, n_time * n_freq, D), token k = t * n_freq + f.
        grid: (n_time, n_freq).
        pooling: ``reference`` (the authors' formula) or ``time`` (a time sequence).
        groups: reference only: the sequence is cut into this many equal parts, which are averaged.
        stride: average-pool window and stride over the pooled sequence.

    Returns:
        (B, P, D): P = n_time * n_freq / groups / stride (reference) or n_time / stride (time).
    """
    b, n, d = tokens.shape
    n_time, n_freq = grid
    if n != n_time * n_freq:
        raise ValueError(f"{n} tokens do not fill a {n_time} x {n_freq} grid")
    if pooling == "reference":
        if n % groups:
            raise ValueError(f"{n} tokens cannot be cut into {groups} groups")
        x = tokens.reshape(b, groups, n // groups, d).mean(dim=1)  # (B, N / groups, D)
    elif pooling == "time":
        x = tokens.reshape(b, n_time, n_freq, d).mean(dim=2)  # (B, n_time, D)
    else:
        raise ValueError(f"pooling={pooling!r}; allowed: reference, time")
    if x.shape[1] % stride:
        raise ValueError(f"{x.shape[1]} pooled tokens are not a multiple of stride {stride}")
    return F.avg_pool1d(x.transpose(1, 2), stride, stride).transpose(1, 2)  # (B, P, D)


def num_prefix_tokens(grid: tuple[int, int], cfg: PrefixConfig) -> int:
    """Number of audio tokens the LM sees: 32 for ViT-B at 1024 x 128 (grid (64, 8)) with either pooling."""
    n = grid[0] * grid[1] // cfg.groups if cfg.pooling == "reference" else grid[0]
    return n // cfg.stride


class AudioPrefix(nn.Module):
    """Encoder + per-token norm + pooling + scale + LayerNorm (no affine) + Linear into the LM's width.

    Args:
        encoder: an AudioMosaic encoder (its projector and head are not used).
        lm_dim: the LM's hidden size.
        cfg: pooling, scale and token-norm settings.
    """

    def __init__(self, encoder: AudioMosaic, lm_dim: int, cfg: PrefixConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        d = encoder.cfg.embed_dim
        # The authors' LTU encoder has `norm` (fc_norm renamed on loading) applied to every token.
        self.token_norm = nn.LayerNorm(d, eps=LN_EPS) if cfg.token_norm else nn.Identity()
        if cfg.token_norm:
            self.token_norm.load_state_dict(encoder.fc_norm.state_dict())
        self.norm = nn.LayerNorm(d, elementwise_affine=False)  # torch's default eps, as nn.LayerNorm(768, ...)
        self.proj = nn.Linear(d, lm_dim)

    @property
    def grid(self) -> tuple[int, int]:
        return self.encoder.grid

    @property
    def num_tokens(self) -> int:
        return num_prefix_tokens(self.grid, self.cfg)

    def features(self, spec: torch.Tensor) -> torch.Tensor:
        """Normalised fbank (B, T, F) or (B, 1, T, F) -> the encoder's final tokens (B, 1 + N, D), CLS first."""
        return self.encoder.forward_features(spec.unsqueeze(1) if spec.ndim == 3 else spec)

    def from_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D) normed patch tokens -> (B, P, lm_dim) prefix embeddings."""
        c = self.cfg
        x = pool_tokens(tokens, self.grid, c.pooling, c.groups, c.stride) / c.scale
        return self.proj(self.norm(x))

    def from_features(self, features: torch.Tensor) -> torch.Tensor:
        """(B, 1 + N, D) encoder output -> per-token norm, CLS dropped -> (B, P, lm_dim)."""
        return self.from_tokens(self.token_norm(features)[:, 1:])

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return self.from_features(self.features(spec))
