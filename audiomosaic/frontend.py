"""Audio front end (docs/method.md §2): waveform -> 16 kHz mono -> Kaldi log-mel fbank -> pad/cut -> (x - mean) / (2 std).

Two implementations of the same function:

- :func:`fbank` follows the authors' path clip by clip through ``torchaudio.compliance.kaldi.fbank``;
- :func:`fbank_batch` computes a whole (B, S) batch at once with one STFT and one matmul, on CPU or GPU, and
  matches :func:`fbank` to 1e-4 (tested). It is what the training loops use.

Kaldi settings fixed by the authors: 128 mel bins, ``htk_compat=True``, ``use_energy=False``, Hanning window,
no dither, 10 ms shift. torchaudio defaults that therefore apply: 25 ms frames (400 samples), 512-point FFT,
pre-emphasis 0.97, per-frame DC removal, 20 Hz low edge, Nyquist high edge, ``snip_edges=True``, log power-mel.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torchaudio

from audiomosaic.config import FrontendConfig


def to_mono(wav: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(S,), (C, S) or soundfile's (S, C) -> (S,) float32 by averaging channels."""
    w = torch.as_tensor(np.asarray(wav) if not isinstance(wav, torch.Tensor) else wav, dtype=torch.float32)
    if w.ndim == 1:
        return w
    if w.ndim != 2:
        raise ValueError(f"waveform must be 1-D or 2-D (channels x samples), got shape {tuple(w.shape)}")
    ch_axis = 0 if w.shape[0] <= w.shape[1] else 1  # fewer channels than samples
    return w.mean(dim=ch_axis)


def resample(wav: torch.Tensor, orig_sr: int, new_sr: int = 16000) -> torch.Tensor:
    """Band-limited sinc resampling (torchaudio.functional.resample) along the last axis."""
    if orig_sr == new_sr:
        return wav
    return torchaudio.functional.resample(wav, orig_sr, new_sr)


def pad_or_cut(feat: torch.Tensor, target_frames: int) -> torch.Tensor:
    """Zero-pad at the end or keep the first ``target_frames`` frames along axis -2 (frames, mel)."""
    n = feat.shape[-2]
    if n < target_frames:
        pad = feat.new_zeros(*feat.shape[:-2], target_frames - n, feat.shape[-1])
        return torch.cat([feat, pad], dim=-2)
    return feat[..., :target_frames, :]


def normalise(feat: torch.Tensor, cfg: FrontendConfig) -> torch.Tensor:
    return (feat - cfg.norm_mean) / (2.0 * cfg.norm_std)  # docs/method.md Decision 3: 2*std, as the training code


def fbank(wav: torch.Tensor | np.ndarray, sample_rate: int, cfg: FrontendConfig = FrontendConfig()) -> torch.Tensor:
    """One clip at any rate and channel count -> normalised (target_frames, num_mel_bins) fbank.

    Raises:
        ValueError: an empty waveform or one shorter than a single 25 ms frame.
    """
    w = resample(to_mono(wav), sample_rate, cfg.sample_rate)
    if w.numel() < int(cfg.sample_rate * cfg.frame_length_ms / 1000):
        raise ValueError(f"waveform of {w.numel()} samples is shorter than one {cfg.frame_length_ms} ms frame")
    w = w - w.mean()
    feat = torchaudio.compliance.kaldi.fbank(
        w[None], htk_compat=True, sample_frequency=cfg.sample_rate, use_energy=False, window_type="hanning",
        num_mel_bins=cfg.num_mel_bins, dither=0.0, frame_shift=cfg.frame_shift_ms, frame_length=cfg.frame_length_ms)
    return normalise(pad_or_cut(feat, cfg.target_frames), cfg)


@functools.lru_cache(maxsize=16)
def _kaldi_constants(cfg: FrontendConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int, int, int]:
    """Hanning window (L,), mel matrix (n_fft//2+1, n_mels), frame length, shift and FFT size (fp32, on device).

    Cached per device so that a training step never copies them host -> GPU (which would sync the host).
    """
    sr = cfg.sample_rate
    length = int(sr * cfg.frame_length_ms / 1000)
    shift = int(sr * cfg.frame_shift_ms / 1000)
    n_fft = 1 << (length - 1).bit_length()  # round up to a power of two
    window = torch.hann_window(length, periodic=False)  # float32, exactly as torchaudio.compliance.kaldi
    mel, _ = torchaudio.compliance.kaldi.get_mel_banks(cfg.num_mel_bins, n_fft, float(sr), 20.0, 0.0, 100.0,
                                                       -500.0, 1.0)
    mel = torch.nn.functional.pad(mel, (0, 1))  # (n_mels, n_fft//2 + 1): Kaldi drops the Nyquist bin
    return window.to(device), mel.T.contiguous().to(device), length, shift, n_fft


def fbank_batch(wav: torch.Tensor, cfg: FrontendConfig = FrontendConfig(),
                lengths: torch.Tensor | None = None) -> torch.Tensor:
    """(B, S) 16 kHz mono waveforms -> (B, 1, target_frames, num_mel_bins) normalised fbanks, on wav's device.

    Args:
        wav: batch at ``cfg.sample_rate``; clips shorter than S are zero-padded and described by ``lengths``.
        lengths: optional (B,) valid sample counts; frames past a clip's end are zeroed like the per-clip pad.
    """
    if wav.ndim != 2:
        raise ValueError(f"fbank_batch expects (B, samples), got shape {tuple(wav.shape)}")
    window, mel_t, length, shift, n_fft = _kaldi_constants(cfg, wav.device)
    x = wav.float()
    if lengths is None:
        x = x - x.mean(dim=1, keepdim=True)
        n_frames = torch.full((x.shape[0],), 1 + (x.shape[1] - length) // shift, device=x.device)
    else:
        lengths = lengths.to(x.device)
        valid = torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]
        x = torch.where(valid, x - (x * valid).sum(1, keepdim=True) / lengths[:, None].clamp(min=1), 0.0)
        n_frames = 1 + (lengths - length).clamp(min=-length) // shift
    frames = x.unfold(1, length, shift)  # (B, n, L) with snip_edges=True
    frames = frames - frames.mean(dim=2, keepdim=True)  # remove DC per frame
    prev = torch.cat([frames[:, :, :1], frames[:, :, :-1]], dim=2)
    frames = (frames - 0.97 * prev) * window  # pre-emphasis (Kaldi repeats the first sample), then window
    ri = torch.view_as_real(torch.fft.rfft(frames, n=n_fft))  # re^2 + im^2 without abs()'s sqrt then square
    power = ri[..., 0].square().addcmul_(ri[..., 1], ri[..., 1])  # (B, n, n_fft//2 + 1)
    feat = torch.clamp(power @ mel_t, min=torch.finfo(torch.float32).eps).log()  # (B, n, n_mels)
    frame_idx = torch.arange(feat.shape[1], device=x.device)[None, :, None]
    feat = torch.where(frame_idx < n_frames[:, None, None], feat, 0.0)
    return normalise(pad_or_cut(feat, cfg.target_frames), cfg)[:, None]


def num_frames(num_samples: int, cfg: FrontendConfig = FrontendConfig()) -> int:
    """Kaldi frame count with snip_edges=True: 10 s -> 998, 1 s -> 98 at 16 kHz."""
    length = int(cfg.sample_rate * cfg.frame_length_ms / 1000)
    shift = int(cfg.sample_rate * cfg.frame_shift_ms / 1000)
    return 0 if num_samples < length else 1 + (num_samples - length) // shift


def samples_for_frames(frames: int, cfg: FrontendConfig = FrontendConfig()) -> int:
    """Fewest samples that give ``frames`` Kaldi frames (a 1024-frame input needs 10.25 s)."""
    length = int(cfg.sample_rate * cfg.frame_length_ms / 1000)
    shift = int(cfg.sample_rate * cfg.frame_shift_ms / 1000)
    return length + (frames - 1) * shift if frames > 0 else 0


def seconds_to_frames(seconds: float, cfg: FrontendConfig = FrontendConfig()) -> int:
    return num_frames(int(math.floor(seconds * cfg.sample_rate)), cfg)
