"""Audio file I/O and the few signal effects the corpus builders need (numpy, no torch in the hot path).

Reading goes through soundfile (wav, flac, ogg, aiff) and the front end's ``to_mono``/``resample`` so that every
loader delivers exactly what the training code expects: 16 kHz mono float32. Writing is 16-bit PCM WAV.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from scipy.signal import fftconvolve, firwin, resample_poly

from audiomosaic.frontend import resample, to_mono

SAMPLE_RATE = 16000


def decode(path: str | os.PathLike, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Decode a file with soundfile -> ((S, C) float32, native sample rate); ``max_seconds`` reads a prefix.

    Raises:
        soundfile.LibsndfileError / RuntimeError: the file cannot be decoded.
        ValueError: the file holds no samples.
    """
    with sf.SoundFile(str(path)) as f:
        sr = f.samplerate
        frames = -1 if max_seconds is None else int(round(max_seconds * sr))
        data = f.read(frames, dtype="float32", always_2d=True)
    if data.shape[0] == 0:
        raise ValueError(f"{path}: no samples")
    return data, sr


def read_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE, max_seconds: float | None = None
               ) -> np.ndarray:
    """Decode a file to mono float32 at ``sample_rate`` through the front end's ``to_mono`` and ``resample``.

    Args:
        path: any format libsndfile reads (wav, flac, ogg, aiff).
        sample_rate: output rate; other rates are converted with the front end's sinc resampler.
        max_seconds: read at most this much from the start (cheap for long files).

    Returns:
        (S,) float32 array.
    """
    data, sr = decode(path, max_seconds)
    wav = to_mono(torch.from_numpy(data.T.copy()))  # (C, S) -> (S,)
    return resample(wav, sr, sample_rate).numpy()


def read_audio_np(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE, max_seconds: float | None = None
                  ) -> np.ndarray:
    """:func:`read_audio` without torch (channel mean + polyphase resampling), for forked build workers:
    torch's OpenMP pool is not safe to use in a child forked from a parent that already used it."""
    data, sr = decode(path, max_seconds)
    return resample_np(data.mean(axis=1), sr, sample_rate)


def write_wav(path: str | os.PathLike, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write (S,) float audio in [-1, 1] as 16-bit PCM, creating parent folders."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pcm = np.clip(np.round(np.asarray(wav, dtype=np.float64) * 32767.0), -32768, 32767).astype(np.int16)
    sf.write(str(path), pcm, sample_rate, subtype="PCM_16")


@functools.lru_cache(maxsize=8)
def _polyphase_filter(up: int, down: int) -> np.ndarray:
    """resample_poly's default Kaiser(5) anti-aliasing FIR, designed once per ratio instead of once per clip."""
    rate = max(up, down)
    return firwin(2 * 10 * rate + 1, 1.0 / rate, window=("kaiser", 5.0))


def resample_np(wav: np.ndarray, orig_sr: int, new_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling for the builders (faster than a sinc kernel per clip; 22.05k -> 16k is 320/441)."""
    if orig_sr == new_sr:
        return wav.astype(np.float32, copy=False)
    g = int(np.gcd(orig_sr, new_sr))
    up, down = new_sr // g, orig_sr // g
    return resample_poly(wav, up, down, window=_polyphase_filter(up, down)).astype(np.float32)


def fit_length(wav: np.ndarray, n: int, offset: int = 0) -> np.ndarray:
    """Place ``wav`` at ``offset`` in ``n`` zeros (cutting what does not fit)."""
    out = np.zeros(n, dtype=np.float32)
    seg = wav[: max(0, n - offset)]
    out[offset: offset + len(seg)] = seg
    return out


def trim_silence(wav: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    """Drop leading/trailing samples below ``threshold`` x peak (TTS pads words with silence)."""
    peak = float(np.abs(wav).max()) if wav.size else 0.0
    if peak == 0.0:
        return wav[:0]
    loud = np.flatnonzero(np.abs(wav) > threshold * peak)
    return wav[loud[0]: loud[-1] + 1]


def peak_normalise(wav: np.ndarray, peak: float = 0.9) -> np.ndarray:
    m = float(np.abs(wav).max()) if wav.size else 0.0
    return wav if m == 0.0 else (wav * (peak / m)).astype(np.float32)


def limit(wav: np.ndarray, peak: float = 0.99) -> np.ndarray:
    """Scale down only if the clip would clip at 16 bit (keeps natural loudness otherwise)."""
    m = float(np.abs(wav).max()) if wav.size else 0.0
    return wav if m <= peak else (wav * (peak / m)).astype(np.float32)


def exp_decay_rir(rng: np.random.Generator, rt60: float, sample_rate: int = SAMPLE_RATE,
                  drr_db: float = 0.0) -> np.ndarray:
    """Synthetic room impulse response: a direct path plus exponentially decaying noise.

    The tail decays by 60 dB over ``rt60`` seconds (amplitude exp(-6.9 t / rt60)); ``drr_db`` sets the
    direct-to-reverberant energy ratio. Adequate stand-in for measured RIRs (docs/data.md §1.5).
    """
    n = max(2, int(rt60 * sample_rate))
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    tail[: int(0.002 * sample_rate)] = 0.0  # ~2 ms before the first reflections
    tail *= np.sqrt(10 ** (-drr_db / 10) / max(np.sum(tail ** 2), 1e-12))
    tail[0] = 1.0
    return tail.astype(np.float32)


def coloured_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Unit-RMS noise with power spectrum ~ 1/f^exponent (0 white, 1 pink, 2 brown)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1]
    x = np.fft.irfft(spec / f ** (exponent / 2), n)
    return (x / (np.sqrt(np.mean(x ** 2)) + 1e-12)).astype(np.float32)


def reverb_and_noise(wav: np.ndarray, rng: np.random.Generator, rt60: tuple[float, float] | None,
                     snr_db: tuple[float, float] | None, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Convolve with a random RIR (RT60 drawn from ``rt60``) and add coloured noise at an SNR drawn from
    ``snr_db``; either step is skipped when its range is None. Output length equals input length."""
    out = wav.astype(np.float32)
    if rt60 is not None:
        rir = exp_decay_rir(rng, rng.uniform(*rt60), sample_rate, drr_db=rng.uniform(-3.0, 10.0))
        out = fftconvolve(out, rir)[: len(wav)].astype(np.float32)
    if snr_db is not None:
        signal_power = float(np.mean(out ** 2))
        noise = coloured_noise(rng, len(out), exponent=rng.uniform(0.0, 2.0))
        out = out + noise * np.sqrt(signal_power / 10 ** (rng.uniform(*snr_db) / 10))
    return out
