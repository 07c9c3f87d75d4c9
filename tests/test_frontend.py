import numpy as np
import pytest
import torch

from audiomosaic.config import FrontendConfig
from audiomosaic.frontend import fbank, fbank_batch, num_frames, samples_for_frames, to_mono


def _tone(sr, seconds, f0=440.0, seed=0):
    t = np.arange(int(sr * seconds)) / sr
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * f0 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_frame_counts():
    assert [num_frames(16000 * s) for s in (10, 5, 1)] == [998, 498, 98]
    assert num_frames(samples_for_frames(1024)) == 1024


def test_shape_padding_and_cut():
    cfg = FrontendConfig(target_frames=128)
    short = fbank(_tone(16000, 0.5), 16000, cfg)
    assert short.shape == (128, 128)
    # padding is zero in the log-mel domain, i.e. -mean/(2 std) after normalisation
    assert torch.allclose(short[60:], torch.full_like(short[60:], -cfg.norm_mean / (2 * cfg.norm_std)))
    long = fbank(_tone(16000, 3.0), 16000, cfg)
    assert long.shape == (128, 128)


def test_resample_and_mono():
    cfg = FrontendConfig(target_frames=98)
    from scipy.signal import resample_poly

    mono16 = _tone(16000, 1.0)
    up = resample_poly(mono16, 441, 160).astype(np.float32)  # the same signal at 44.1 kHz
    stereo44 = np.stack([up * 0.5, up * 1.5], axis=1)  # soundfile's (S, C); the channel mean is the signal
    a, b = fbank(mono16, 16000, cfg), fbank(stereo44, 44100, cfg)
    assert a.shape == b.shape == (98, 128)
    strong = a > a.mean()  # compare where there is energy (log of near-silence is resampler-dependent)
    assert (a - b)[strong].abs().mean() < 0.02
    assert torch.equal(a.argmax(1)[5:-5], b.argmax(1)[5:-5])
    assert to_mono(np.ones((2, 100))).shape == (100,)


def test_batched_matches_per_clip():
    cfg = FrontendConfig(target_frames=256)
    clips = [_tone(16000, 2.0, f0, seed=i) for i, f0 in enumerate((220.0, 880.0, 3000.0))]
    batch = fbank_batch(torch.from_numpy(np.stack(clips)), cfg)
    assert batch.shape == (3, 1, 256, 128)
    for i, c in enumerate(clips):
        assert (batch[i, 0] - fbank(c, 16000, cfg)).abs().max() < 1e-4


def test_batched_with_lengths_matches_per_clip_padding():
    cfg = FrontendConfig(target_frames=200)
    a, b = _tone(16000, 1.5), _tone(16000, 0.7, 1000.0)
    wav = torch.zeros(2, a.size)
    wav[0], wav[1, :b.size] = torch.from_numpy(a), torch.from_numpy(b)
    batch = fbank_batch(wav, cfg, lengths=torch.tensor([a.size, b.size]))
    assert (batch[1, 0] - fbank(b, 16000, cfg)).abs().max() < 1e-4
    assert (batch[0, 0] - fbank(a, 16000, cfg)).abs().max() < 1e-4


def test_too_short_or_bad_shape_raises():
    with pytest.raises(ValueError, match="shorter than one"):
        fbank(np.zeros(100, np.float32), 16000)
    with pytest.raises(ValueError, match=r"\(B, samples\)"):
        fbank_batch(torch.zeros(16000))
