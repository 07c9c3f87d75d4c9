"""Augmentations of supervised fine-tuning (docs/method.md §8), batched on the device, each drawing only from
the generator it is given so a resumed run repeats them exactly: waveform mixup, SpecAugment bands and the
authors' Speech Commands spectrogram noise + roll."""
from __future__ import annotations

import numpy as np
import torch


def beta(n: int, a: float, generator: torch.Generator) -> torch.Tensor:
    """(n,) draws of Beta(a, a) from a numpy generator seeded by ``generator`` (torch's Beta takes no generator)."""
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    return torch.from_numpy(np.random.default_rng(seed).beta(a, a, size=n)).float()


def mixup(wav: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor, prob: float,
          generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Waveform mixup: with probability ``prob`` a clip becomes lam x itself + (1 - lam) x a partner.

    Args:
        wav: (B, S); target: (B, C); lengths: (B,) valid samples.
        prob: per-clip mixing probability; lam ~ Beta(10, 10); the partner is uniform among the other B - 1 clips.
    Returns:
        mixed wav (B, S), mixed targets (B, C) (rows of a one-hot target still sum to 1), lengths (B,).
    """
    b = wav.shape[0]
    if b < 2 or prob <= 0:
        return wav, target, lengths
    fires = torch.rand(b, generator=generator) < prob
    lam = torch.where(fires, beta(b, 10.0, generator), torch.ones(b))
    partner = (torch.arange(b) + torch.randint(1, b, (b,), generator=generator)) % b
    lam, partner = lam.to(wav.device), partner.to(wav.device)
    lam_w = lam[:, None].to(wav.dtype)
    mixed = lam_w * wav + (1 - lam_w) * wav[partner]
    mixed_t = lam[:, None] * target + (1 - lam[:, None]) * target[partner]
    return mixed, mixed_t, torch.where(fires.to(wav.device), torch.maximum(lengths, lengths[partner]), lengths)


def spec_augment(spec: torch.Tensor, freqm: int, timem: int, generator: torch.Generator,
                 fill: float = 0.0) -> torch.Tensor:
    """One frequency band and one time band per example set to ``fill`` (torchaudio's Frequency/TimeMasking).

    Widths are uniform integers in [0, freqm) and [0, timem); starts uniform over the positions that fit.
    spec (B, 1, T, F) -> (B, 1, T, F).
    """
    b, _, t, f = spec.shape

    def band(size: int, max_width: int) -> torch.Tensor:  # (B, size) bool
        u = torch.rand(b, 2, generator=generator)
        width = (u[:, 0] * min(max_width, size + 1)).floor()
        start = (u[:, 1] * (size - width + 1)).floor().clamp(max=size - width)
        pos = torch.arange(size)[None]
        return ((pos >= start[:, None]) & (pos < (start + width)[:, None])).to(spec.device)

    drop = torch.zeros(b, t, f, dtype=torch.bool, device=spec.device)
    if freqm > 0:
        drop |= band(f, freqm)[:, None, :]
    if timem > 0:
        drop |= band(t, timem)[:, :, None]
    return spec.masked_fill(drop[:, None], fill)


def spec_noise(spec: torch.Tensor, generator: torch.Generator, max_roll: int = 10) -> torch.Tensor:
    """The authors' Speech Commands ``noise``: add U(0, 1) x u / 10 (u ~ U(0, 1) per clip), then roll each clip by
    an integer in [-max_roll, max_roll] frames along time. spec (B, 1, T, F) -> (B, 1, T, F)."""
    b, _, t, _ = spec.shape
    amp = torch.rand(b, 1, 1, 1, generator=generator) / 10
    spec = spec + (torch.rand(spec.shape, generator=generator) * amp).to(spec.device, spec.dtype)
    shift = torch.randint(-max_roll, max_roll + 1, (b,), generator=generator).to(spec.device)
    idx = (torch.arange(t, device=spec.device)[None] - shift[:, None]) % t  # (B, T): torch.roll per clip
    return spec.gather(2, idx[:, None, :, None].expand_as(spec))
