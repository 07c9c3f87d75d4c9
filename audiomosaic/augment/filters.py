"""Batched spectral filters and the row helpers every batched augmentation shares.

Every operation takes a (B, S) float batch, per-example parameters as (B,) tensors and a (B,) bool ``fires``
mask; rows where an operation does not fire come back bit-identical (see :func:`apply_where`). On CPU the work
runs on the firing rows only, and the vocoder operations (:mod:`audiomosaic.augment.vocoder`) walk them in chunks
of ``CPU_CHUNK_SAMPLES`` samples; on CUDA each operation is one pass over all rows with no host synchronisation
(:func:`sync_free`).

``HighPassFilter`` / ``BandStopFilter`` of the authors' chain (audiomentations, docs/method.md §3) are
``scipy.signal.butter(N = rolloff / 6)`` causal SOS filters. Here: the *exact magnitude* of that digital
Butterworth (bilinear transform with pre-warping, as ``butter(fs=)`` designs it) applied as a zero-phase mask on
the rfft of the whole clip. The phase response is dropped; the log-mel front end only sees power spectra. The FFT
filter is circular over the buffer, like the roll before it.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import torch

# CPU passes of the vocoder operations work on at most this many samples at a time (one 10-s clip). Their
# (T, F) tensors (~2.6 MB per clip) then stay under glibc's dynamic mmap threshold (32 MiB at most), so freed
# buffers are reused from the heap; whole-batch tensors are mmapped and page-faulted afresh on every call, which
# measured 1.6x slower end to end (bench/NOTES.md). CUDA takes the whole batch in one pass.
CPU_CHUNK_SAMPLES = 160_000

# True: CPU tensors take the CUDA formulation too (tests run it on CPU; see :func:`sync_free`).
SYNC_FREE = False


def sync_free(x: torch.Tensor) -> bool:
    """Whether operations on ``x`` must avoid host synchronisation: on CUDA (where a ``nonzero``, ``.item()`` or
    ``.tolist()`` stalls the host until the GPU catches up), or everywhere when ``SYNC_FREE`` is set. The sync-free
    formulation computes every row and shape from host-side bounds; the CPU one reads data-dependent sizes back to
    skip work."""
    return x.is_cuda or SYNC_FREE


def _chunk_rows(wav: torch.Tensor, chunk: bool) -> int:
    return wav.shape[0] if sync_free(wav) or not chunk else max(1, CPU_CHUNK_SAMPLES // max(wav.shape[-1], 1))


def map_rows(fn: Callable[..., torch.Tensor], wav: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
    """``fn(wav, *params)`` evaluated in row chunks on CPU (see ``CPU_CHUNK_SAMPLES``), in one call on CUDA.

    ``fn`` must treat rows independently; random draws inside it follow the chunk order (still reproducible).
    """
    rows = _chunk_rows(wav, True)
    if rows >= wav.shape[0]:
        return fn(wav, *params)
    return torch.cat([fn(wav[i:i + rows], *(p[i:i + rows] for p in params)) for i in range(0, wav.shape[0], rows)])


def apply_where(fires: torch.Tensor, fn: Callable[..., torch.Tensor], wav: torch.Tensor,
                *params: torch.Tensor, chunk: bool = True, inplace: bool = False) -> torch.Tensor:
    """Run ``fn(wav[rows], *(p[rows] ...))`` on the rows where ``fires`` and leave the other rows untouched.

    CPU: only the firing rows are computed (30-50% of the vocoder work saved at the authors' probabilities), in
    chunks. Sync-free (CUDA, :func:`sync_free`): every row is computed in one pass and the non-firing rows are
    restored with ``torch.where``; selecting rows would need ``nonzero``, a host sync per operation that stalls
    the step's kernel launches.

    Args:
        fires: (B,) bool.
        fn: batched operation (B', S) + (B',) params -> (B', S), rows independent.
        wav: (B, S) batch.
        params: (B,) per-example parameters, indexed like ``wav``.
        chunk: on CPU, evaluate ``fn`` on row chunks of ``CPU_CHUNK_SAMPLES`` samples; False for operations
            built on one long rfft per row, which MKL computes 4-5x slower per row alone than in a batch.
        inplace: write the firing rows into ``wav`` itself (a caller that owns ``wav``, like the chain, saves a
            copy of every row per operation; ``fn`` never sees a row after it was overwritten).
    Returns:
        (B, S): a new tensor (``wav`` itself if ``inplace``); non-firing rows are bit-identical to ``wav``'s.
    """
    if sync_free(wav):  # every row, then keep the firing ones: no data-dependent shape
        return torch.where(fires[:, None], fn(wav, *params).to(wav.dtype), wav)
    idx = fires.nonzero().squeeze(1)
    rows = _chunk_rows(wav, chunk)
    if idx.numel() == wav.shape[0] and rows >= wav.shape[0]:
        return fn(wav, *params)
    out = wav if inplace else torch.empty_like(wav) if idx.numel() == wav.shape[0] else wav.clone()
    ids = idx.tolist()  # CPU: chunks of the firing rows
    for i in range(0, len(ids), rows):
        chunk = ids[i:i + rows]
        if chunk[-1] - chunk[0] == len(chunk) - 1:  # consecutive rows: views in, one plain copy out
            sl = slice(chunk[0], chunk[-1] + 1)
            out[sl] = fn(wav[sl], *(p[sl] for p in params))
        else:  # ``out[sel] = ...`` (index_put) would cost ~1.4 ms per 10-s row, a quarter of the vocoder
            sel = torch.tensor(chunk)
            res = fn(wav.index_select(0, sel), *(p.index_select(0, sel) for p in params))
            out.index_copy_(0, sel, res.to(wav.dtype))
    return out


# ------------------------------------------------------------------------------------------------------------
# Butterworth magnitude responses and the FFT filter
# ------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _warped_grid(n: int, device: torch.device) -> torch.Tensor:
    """tan(pi f / fs) at the n//2+1 rfft bin frequencies: the bilinear transform's pre-warped axis."""
    f = torch.arange(n // 2 + 1, dtype=torch.float64) / n  # cycles/sample
    return torch.tan(math.pi * f).to(torch.float32).to(device)


def _warp(hz: torch.Tensor, sample_rate: int) -> torch.Tensor:
    # Edges past Nyquist are clamped as audiomentations does (0.9999 * Nyquist) so tan stays finite.
    return torch.tan(math.pi * (hz / sample_rate).clamp(max=0.49995))


def _butterworth_power(ratio: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """|ratio|^(2N) per row, N = ``order`` (B,). On CPU, for the integer orders the parameter law draws (2, 3, 4),
    by repeated squaring row by row: ``pow`` with a tensor exponent (exp + log per element) was half of a filter's
    response cost. CUDA (or a non-integer order): one ``pow``, no host read of the orders."""
    if sync_free(ratio) or not bool((order == order.round()).all()):
        return ratio.abs().pow(2.0 * order[:, None])
    y = ratio.square()
    out = torch.empty_like(y)
    for i, n in enumerate(order.round().long().tolist()):
        yi, oi = y[i], out[i]
        if n == 2:
            torch.square(yi, out=oi)
        elif n == 4:
            torch.square(yi, out=oi).square_()
        elif n == 3:
            torch.mul(yi, yi, out=oi).mul_(yi)
        else:
            torch.pow(yi, n, out=oi)
    return out


def _highpass_term(n: int, cutoff_hz: torch.Tensor, rolloff_db: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """(w_c / w)^(2N) at the rfft bins: |H|^2 = 1 / (1 + this)."""
    ratio = _warp(cutoff_hz, sample_rate)[:, None] / _warped_grid(n, cutoff_hz.device)[None]  # inf at DC -> |H| = 0
    return _butterworth_power(ratio, rolloff_db / 6.0)


def _bandstop_term(n: int, center_hz: torch.Tensor, bandwidth_hz: torch.Tensor, rolloff_db: torch.Tensor,
                   sample_rate: int) -> torch.Tensor:
    """Omega^(2N) at the rfft bins: |H|^2 = 1 / (1 + this)."""
    w = _warped_grid(n, center_hz.device)[None]
    w1 = _warp((center_hz - bandwidth_hz / 2).clamp(min=0.0), sample_rate)[:, None]
    w2 = _warp(center_hz + bandwidth_hz / 2, sample_rate)[:, None]
    omega = (w2 - w1) / (w1 * w2 / w - w)  # written so that DC (w = 0) gives 0, not 0/0
    return _butterworth_power(omega, rolloff_db / 6.0)


def highpass_response(n: int, cutoff_hz: torch.Tensor, rolloff_db: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """|H| of ``butter(rolloff/6, cutoff, 'highpass', fs=sample_rate)`` at the rfft bins of an n-point signal.

    |H|^2 = 1 / (1 + (w_c / w)^(2N)) with w = tan(pi f / fs) (pre-warped): -3 dB at the cutoff, -6N dB/octave.

    Args:
        n: signal length (FFT size).
        cutoff_hz, rolloff_db: (B,).
    Returns:
        (B, n//2+1) float32 magnitudes in [0, 1].
    """
    return torch.rsqrt(1.0 + _highpass_term(n, cutoff_hz, rolloff_db, sample_rate))


def bandstop_response(n: int, center_hz: torch.Tensor, bandwidth_hz: torch.Tensor, rolloff_db: torch.Tensor,
                      sample_rate: int) -> torch.Tensor:
    """|H| of ``butter(rolloff/6, [c - bw/2, c + bw/2], 'bandstop', fs=sample_rate)`` at the rfft bins.

    Low-pass prototype through the band-stop transform, Omega = w (w2 - w1) / (w1 w2 - w^2) on the pre-warped axis,
    |H|^2 = 1 / (1 + Omega^(2N)): zero at the geometric centre sqrt(w1 w2), -3 dB at both edges.

    Args:
        n: signal length.
        center_hz, bandwidth_hz, rolloff_db: (B,); the band is [center - bw/2, center + bw/2] (audiomentations).
    Returns:
        (B, n//2+1) float32 magnitudes in [0, 1].
    """
    return torch.rsqrt(1.0 + _bandstop_term(n, center_hz, bandwidth_hz, rolloff_db, sample_rate))


def filter_response(n: int, hp_fires: torch.Tensor, cutoff_hz: torch.Tensor, hp_rolloff_db: torch.Tensor,
                    bs_fires: torch.Tensor, center_hz: torch.Tensor, bandwidth_hz: torch.Tensor,
                    bs_rolloff_db: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """|H_hp H_bs| at the rfft bins of an n-point signal, each factor only on the rows where it fires:
    1 / sqrt((1 + hp term) (1 + bs term)), one rsqrt for both. All params (B,); returns (B, n//2+1)."""
    if sync_free(cutoff_hz):
        den = torch.where(hp_fires[:, None], 1.0 + _highpass_term(n, cutoff_hz, hp_rolloff_db, sample_rate), 1.0)
        den = den * torch.where(bs_fires[:, None],
                                1.0 + _bandstop_term(n, center_hz, bandwidth_hz, bs_rolloff_db, sample_rate), 1.0)
        return den.rsqrt_()
    den = torch.ones(hp_fires.shape[0], n // 2 + 1, device=cutoff_hz.device)
    for fires, term, args in ((hp_fires, _highpass_term, (cutoff_hz, hp_rolloff_db)),
                              (bs_fires, _bandstop_term, (center_hz, bandwidth_hz, bs_rolloff_db))):
        rows = fires.nonzero().squeeze(1)
        if rows.numel() == fires.shape[0]:
            den.mul_(term(n, *args, sample_rate).add_(1.0))
        elif rows.numel():
            sub = term(n, *(a.index_select(0, rows) for a in args), sample_rate).add_(1.0)
            den.index_copy_(0, rows, sub.mul_(den.index_select(0, rows)))
    return den.rsqrt_()


def fft_filter(wav: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    """Zero-phase circular filtering: irfft(rfft(wav) * response). wav (B, S), response (B, S//2+1)."""
    spec = torch.fft.rfft(wav)
    return torch.fft.irfft(spec * response, n=wav.shape[-1])


def highpass(wav: torch.Tensor, cutoff_hz: torch.Tensor, rolloff_db: torch.Tensor, sample_rate: int,
             fires: torch.Tensor) -> torch.Tensor:
    """Butterworth high-pass (magnitude-exact, zero-phase) on the rows where ``fires``. All params (B,)."""
    def run(x: torch.Tensor, fc: torch.Tensor, ro: torch.Tensor) -> torch.Tensor:
        return fft_filter(x, highpass_response(x.shape[-1], fc, ro, sample_rate))
    return apply_where(fires, run, wav, cutoff_hz, rolloff_db, chunk=False)


def bandstop(wav: torch.Tensor, center_hz: torch.Tensor, bandwidth_hz: torch.Tensor, rolloff_db: torch.Tensor,
             sample_rate: int, fires: torch.Tensor) -> torch.Tensor:
    """Butterworth band-stop (magnitude-exact, zero-phase) on the rows where ``fires``. All params (B,)."""
    def run(x: torch.Tensor, c: torch.Tensor, bw: torch.Tensor, ro: torch.Tensor) -> torch.Tensor:
        return fft_filter(x, bandstop_response(x.shape[-1], c, bw, ro, sample_rate))
    return apply_where(fires, run, wav, center_hz, bandwidth_hz, rolloff_db, chunk=False)
