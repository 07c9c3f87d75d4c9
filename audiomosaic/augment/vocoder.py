"""Batched phase-vocoder time stretch and pitch shift (librosa's algorithms), with their STFT / ISTFT.

What the authors' CPU chain does per clip (audiomentations + librosa, docs/method.md §3) and what is done here:

- ``TimeStretch`` (librosa phase vocoder, n_fft 2048, hop 512, length kept): the same vocoder, with the phase
  accumulated as a cumulative product of unit phasors instead of wrapped angle sums, which is the same
  rotation without ``atan2`` (the dominant CPU cost otherwise).
- ``PitchShift``: librosa's recipe, stretch by 2^(-n/12) then resample back by that factor. The anti-alias
  low-pass of the resampler is done in the vocoder's STFT (bins above the new Nyquist are zeroed), the
  resampling itself is 4-tap Catmull-Rom interpolation.

Both take the (B, S) batch, (B,) parameters and a (B,) ``fires`` mask of :mod:`audiomosaic.augment.filters`.
"""
from __future__ import annotations

import functools
import math

import torch

from audiomosaic.augment.filters import apply_where
from audiomosaic.augment.filters import sync_free as _sync_free

N_FFT = 2048  # librosa.effects.time_stretch / pitch_shift defaults
HOP = 512


@functools.lru_cache(maxsize=8)
def _window(n_fft: int, device: torch.device) -> torch.Tensor:
    return torch.hann_window(n_fft, periodic=True, device=device)  # scipy/librosa 'hann' (fftbins=True)


def stft(x: torch.Tensor, n_fft: int = N_FFT, hop: int = HOP, zero_frames: int = 0) -> torch.Tensor:
    """librosa-style centred STFT (zero padding) in time-major layout: (B, S) -> (B, 1 + S // hop, n_fft//2+1).

    Time-major so the vocoder's per-example frame lookups copy whole contiguous rows.

    Args:
        zero_frames: all-zero frames appended after the last one (the vocoder's padding frame, written in the same
            buffer instead of a copy of the whole STFT).
    """
    xp = torch.nn.functional.pad(x, (n_fft // 2, n_fft // 2))
    framed = xp.unfold(1, n_fft, hop)
    if not zero_frames:
        return torch.fft.rfft(framed * _window(n_fft, x.device), dim=-1)
    buf = framed.new_empty(x.shape[0], framed.shape[1] + zero_frames, n_fft)
    torch.mul(framed, _window(n_fft, x.device), out=buf[:, :framed.shape[1]])
    buf[:, framed.shape[1]:] = 0.0
    return torch.fft.rfft(buf, dim=-1)


def _inverse_envelope(n_valid: torch.Tensor, n_frames: int, n_fft: int, hop: int) -> torch.Tensor:
    """1 / (sum of squared windows of each example's first n_valid frames), 0 where that sum is ~0.

    The general form, used for clips of fewer than n_fft / hop - 1 frames; :func:`istft` patches only the tail.
    Returns:
        (B, n_fft + (n_frames - 1) hop).
    """
    w2 = _window(n_fft, n_valid.device).square().reshape(n_fft // hop, hop)
    valid = (torch.arange(n_frames, device=n_valid.device)[None] < n_valid[:, None]).to(w2.dtype)[..., None]
    env = w2.new_zeros(n_valid.shape[0], n_frames + w2.shape[0] - 1, hop)
    for j in range(w2.shape[0]):  # n_fft / hop shifted adds, as in _overlap_add
        env[:, j:j + n_frames] += valid * w2[j]
    env = env.reshape(n_valid.shape[0], -1)
    return torch.where(env > 1e-8, 1.0 / env, 0.0)


@functools.lru_cache(maxsize=32)
def _envelopes(n_frames: int, n_fft: int, hop: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse window power of n_frames overlap-added frames, (n_fft + (n_frames - 1) hop,), and of the
    (k - 1) hop samples after the last frame's start, k = n_fft / hop, which depend on no frame count >= k - 1:
    block e of that tail sums the squared-window blocks e+1 .. k-1 of the last frames."""
    full = _inverse_envelope(torch.tensor([n_frames], device=device), n_frames, n_fft, hop)[0]
    w2 = _window(n_fft, device).square().reshape(n_fft // hop, hop)
    tail = torch.cat([w2[e + 1:].sum(0) for e in range(w2.shape[0] - 1)])
    return full, torch.where(tail > 1e-8, 1.0 / tail, 0.0)


def _overlap_add(frames: torch.Tensor, hop: int, window: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T, n_fft) -> (B, n_fft + (T - 1) hop); n_fft must be a multiple of hop (k = n_fft / hop shifts).

    ``window``: optional (n_fft,) synthesis window, applied inside the adds (one pass over the frames fewer)."""
    b, t, n_fft = frames.shape
    k = n_fft // hop
    blocks = frames.reshape(b, t, k, hop)
    out = frames.new_zeros(b, t + k - 1, hop)
    w = None if window is None else window.reshape(k, hop)
    for j in range(k):  # k = 4 shifted block adds, not a loop over examples
        if w is None:
            out[:, j:j + t] += blocks[:, :, j]
        else:
            out[:, j:j + t].addcmul_(blocks[:, :, j], w[j])
    return out.reshape(b, -1)


def istft(spec: torch.Tensor, length: int, n_fft: int = N_FFT, hop: int = HOP,
          n_valid: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse of :func:`stft` (windowed overlap-add / window power): (B, T, F) -> (B, length), zero-padded.

    Args:
        n_valid: optional (B,) number of leading frames that exist per example (default all T); the frames
            after them must be zero, as :func:`phase_vocoder` leaves them. Only the existing frames count in the
            window-power normalisation (librosa's istft of a shorter STFT).
    """
    b, t, _ = spec.shape
    k = n_fft // hop
    y = _overlap_add(torch.fft.irfft(spec, n=n_fft, dim=-1), hop, _window(n_fft, spec.device))
    # a clip of a few frames needs the general envelope; on CUDA always take it (reading min() back would be a
    # host sync, and the extra pass costs little there)
    if n_valid is not None and (_sync_free(spec) or int(n_valid.min()) < k - 1):
        y.mul_(_inverse_envelope(n_valid, t, n_fft, hop))
    else:
        if n_valid is None:
            full, tail = _envelopes(t, n_fft, hop, spec.device)
        else:  # a cached envelope of more frames: it equals this one up to the last frame's start, and the tail
            # after each clip's last frame is patched below (frame counts vary per call: no cache miss per call)
            full, tail = _envelopes(-(-t // 64) * 64, n_fft, hop, spec.device)
            full = full[:y.shape[1]]
        if n_valid is not None:  # after each clip's last frame the window power is the tail's, not the full one
            pos = n_valid[:, None] * hop + torch.arange(tail.numel(), device=spec.device)[None]
            patched = y.gather(1, pos).mul_(tail)
        y.mul_(full)
        if n_valid is not None:
            y.scatter_(1, pos, patched)
    y = y[:, n_fft // 2:n_fft // 2 + length]
    return y if y.shape[1] == length else torch.nn.functional.pad(y, (0, length - y.shape[1]))


def _take_frames(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x[b, idx[b, t]] for x (B, T, F) and idx (B, N) -> (B, N, F), as one row ``index_select`` on the flattened
    (B T, F) view: measured several times faster than advanced indexing, for complex tensors especially."""
    b, t, f = x.shape
    flat = idx + t * torch.arange(b, device=x.device)[:, None]
    return x.reshape(b * t, f).index_select(0, flat.reshape(-1)).view(b, idx.shape[1], f)


def _frame_positions(rate: torch.Tensor, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Output frame t reads input position t * rate: (B, n_out) floor j (long) and fraction alpha (float32)."""
    step = torch.arange(n_out, device=rate.device, dtype=torch.float32)[None] * rate[:, None].float()
    j = step.floor().long()
    return j, step - j


def phase_vocoder(spec: torch.Tensor, rate: torch.Tensor, n_out: int,
                  max_bin: torch.Tensor | None = None, sync_free: bool | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched librosa ``phase_vocoder``: output frame t reads input position t * rate[b].

    Magnitudes are interpolated linearly between the two neighbouring input frames j_t = floor(t rate) and j_t + 1;
    the phase starts at frame 0's and, from output frame t - 1 to t, advances by the phase difference of input
    frames j_{t-1} and j_{t-1} + 1. librosa's ``phi_advance + principal(dphase)`` is that same rotation modulo 2 pi,
    so it is done with unit phasors u = X / |X| (no ``atan2`` / ``cos`` / ``sin``). Positions past the input end
    read zero frames, as librosa's two frames of zero padding do (the phase of a zero-magnitude frame never matters).

    The phase of output frame t is u_0 prod_{s < t} u_{j_s + 1} conj(u_{j_s}). Two ways to evaluate it:

    - CPU (default): the product telescopes. With k_t = j_{t-1} + 1 (k_0 = 0) it equals u_{k_t} C_t, where
      C_t = prod_{s < t} u_{k_s} conj(u_{j_s}) and every factor with k_s = j_s (input read one frame further, the
      usual case) is 1. Only the "events" where the read position repeats or skips a frame (a fraction |1 - rate|
      of the frames) enter a short cumulative product; the rest is a row gather and two multiplies.
    - CUDA (``sync_free``): the rotations of all frames, gathered, and ``torch.cumprod``: no data-dependent
      shapes, so no host sync.

    Args:
        spec: (B, T, F) complex STFT from :func:`stft`.
        rate: (B,) time-stretch rates (> 1 faster).
        n_out: frames in the output buffer (the same for every example).
        max_bin: optional (B,) float; bins above it are zeroed (the pitch shifter's anti-alias low-pass).
        sync_free: force (True) or forbid (False) the CUDA formulation; default: True on CUDA only.
    Returns:
        (B, n_out, F) complex STFT and (B,) long: the frames librosa would produce, #{t : t * rate < T}; the
        later ones are zero and must not count in the istft normalisation.
    """
    padded = torch.cat([spec, spec.new_zeros(spec.shape[0], 1, spec.shape[2])], dim=1)
    return _vocode(padded, rate, n_out, max_bin, sync_free)


def _vocode(spec: torch.Tensor, rate: torch.Tensor, n_out: int, max_bin: torch.Tensor | None = None,
            sync_free: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`phase_vocoder` on a (B, T + 1, F) STFT whose last frame is zero (``stft(zero_frames=1)``), which it
    overwrites with its unit phasors (one buffer fewer per call)."""
    b, t_pad, n_bins = spec.shape
    t_in = t_pad - 1  # frame t_in: |X| = 0, phasor 1 (librosa's zero padding)
    no_sync = _sync_free(spec) if sync_free is None else sync_free
    # |X| and X / |X| with contiguous passes only: abs() of a complex tensor (hypot) and real ops on strided re / im
    # views measured 3-6x slower on CPU than squaring the interleaved view and adding its two halves
    sq = torch.view_as_real(spec).square()
    inv = torch.add(sq[..., 0], sq[..., 1]).rsqrt_()  # 1 / |X|, inf where |X| = 0
    del sq
    mag = torch.reciprocal(inv)  # exactly 0 where |X| = 0
    unit = spec.mul_(inv)  # in place: the STFT is not needed any more; 0 * inf = nan on zero bins, fixed next
    # max() == inf is 10x cheaper than isinf().any() on CPU; CUDA always fills (reading back would sync)
    if no_sync or (t_in > 0 and float(inv[:, :t_in].max()) == math.inf):
        unit.masked_fill_(mag == 0, 1.0)  # the padding frame included
    else:
        unit[:, t_in] = 1.0
    del inv
    j, alpha = _frame_positions(rate, n_out)
    n_valid = (j < t_in).sum(1)  # = #{t : t * rate < T}, as the float32 steps round
    jc = j.clamp(max=t_in)  # frames past the end read the zero frame
    # magnitudes: lerp of frames j and j + 1 (both clamped to the zero frame)
    m = _take_frames(mag, jc).lerp_(_take_frames(mag, (j + 1).clamp_(max=t_in)), alpha[..., None])
    del mag
    if max_bin is not None:
        m.mul_((torch.arange(n_bins, device=spec.device)[None] <= max_bin[:, None]).to(m.dtype)[:, None])
    k = torch.cat([torch.zeros_like(j[:, :1]), (j[:, :-1] + 1).clamp_(max=t_in)], dim=1)
    if no_sync:
        # the rotation into frame k_t from k_t - 1 for every output frame; at t = 0 the start phasor u_0
        rot = _take_frames(unit, k)
        rot[:, 1:].mul_(_take_frames(unit, k[:, 1:] - 1).conj())
        return torch.cumprod(rot, dim=1).mul_(m), n_valid
    out = _take_frames(unit, k)
    # events: output frames s (inside the input) with k_s != j_s; their factors u_{k_s} conj(u_{j_s})
    event = (k != jc) & (j < t_in)
    rows, cols = event.nonzero(as_tuple=True)
    if rows.numel():
        flat = unit.view(b * t_pad, n_bins)
        base = rows * t_pad
        d = flat.index_select(0, base + k[rows, cols]).mul_(flat.index_select(0, base + jc[rows, cols]).conj())
        rank = event.cumsum(1)  # events at or before t; C_t takes those before t
        n_ev = int(rank[:, -1].max())
        factors = torch.ones(b, n_ev + 1, n_bins, dtype=spec.dtype, device=spec.device)
        factors.view(-1, n_bins).index_copy_(0, rows * (n_ev + 1) + rank[rows, cols], d)
        # a short scan (n_ev ~ |1 - rate| T); gathering its rows measured cheaper than one broadcast multiply
        # per constant run (~50 small ops per call)
        factors = torch.cumprod(factors, dim=1)
        before = torch.cat([torch.zeros_like(rank[:, :1]), rank[:, :-1]], dim=1)
        out.mul_(_take_frames(factors, before))
    return out.mul_(m), n_valid


def _stretch_frames(length: int, n_fft: int, hop: int) -> int:
    """Output frames whose centred windows touch samples [0, length)."""
    return (length + n_fft // 2) // hop + 1


def _valid_frames(rate: torch.Tensor, n_out: int, t_in: int, no_sync: bool) -> int:
    """On CPU, the output frames any row really produces (``phase_vocoder``'s n_valid; the later ones are zero
    and only cost FFT and memory passes: up to 23% of a time stretch at rate 1.3); on CUDA n_out itself (no sync)."""
    if no_sync:
        return n_out
    return max(1, min(n_out, int((_frame_positions(rate, n_out)[0] < t_in).sum(1).max())))


def time_stretch(wav: torch.Tensor, rate: torch.Tensor, fires: torch.Tensor, lengths: torch.Tensor | None = None,
                 n_fft: int = N_FFT, hop: int = HOP, inplace: bool = False) -> torch.Tensor:
    """librosa ``time_stretch`` with audiomentations' ``leave_length_unchanged=True``, on the rows where ``fires``.

    The stretched clip has round(L / rate) samples: it is cut to L when slower (rate < 1) and zero-padded to L
    when faster (rate > 1). The pitch is unchanged.

    Args:
        wav: (B, S).
        rate: (B,) > 0; > 1 speeds up.
        fires: (B,) bool.
        lengths: optional (B,) valid lengths L (default S); the stretched content ends at round(L / rate).
    Returns:
        (B, S).
    """
    lengths = _full_lengths(wav, lengths)

    def run(x: torch.Tensor, r: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        s = x.shape[-1]
        n_out = _valid_frames(r, _stretch_frames(s, n_fft, hop), 1 + s // hop, _sync_free(x))
        spec, n_valid = _vocode(stft(x, n_fft, hop, zero_frames=1), r, n_out)
        out = istft(spec, s, n_fft, hop, n_valid)
        return _zero_past(out, torch.round(n.double() / r.double()))  # librosa's len_stretch

    return apply_where(fires, run, wav, rate, lengths, inplace=inplace)


def pitch_shift(wav: torch.Tensor, semitones: torch.Tensor, sample_rate: int, fires: torch.Tensor,
                lengths: torch.Tensor | None = None, n_fft: int = N_FFT, hop: int = HOP,
                max_semitones: float | None = None, inplace: bool = False) -> torch.Tensor:
    """librosa ``pitch_shift`` on the rows where ``fires``: stretch by r = 2^(-n/12), then resample by r.

    Output sample i reads the stretched clip at i / r (Catmull-Rom interpolation). For upward shifts (r < 1)
    the vocoder zeroes bins above r * Nyquist first, so the resampling does not alias.

    Args:
        wav: (B, S).
        semitones: (B,) shift in semitones (> 0 up).
        sample_rate: only used to check the call; the shift is rate-independent.
        fires: (B,) bool.
        lengths: optional (B,) valid lengths L; the output is zero where i / r is past the stretched clip.
        max_semitones: optional upper bound of ``semitones``. On CUDA it sizes the stretch buffer without reading
            the batch's largest shift back to the host (a sync); on CPU, where rows run one by one, each row's
            own shift sizes it (less work). The result is the same either way.
    Returns:
        (B, S).
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    lengths = _full_lengths(wav, lengths)

    def run(x: torch.Tensor, n_semi: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        s = x.shape[-1]
        r = torch.pow(2.0, -n_semi.double() / 12.0)  # stretch rate; float64 so positions i / r stay exact
        if _sync_free(x) and max_semitones is not None:
            long_len = int(math.ceil(s * 2.0 ** (max_semitones / 12.0))) + 2
        else:  # the buffer must fit the slowest stretch; a host sync on CUDA
            long_len = int(math.ceil(s / float(r.min()))) + 2
        max_bin = (r.clamp(max=1.0) * (n_fft // 2)).float()
        n_out = _valid_frames(r.float(), _stretch_frames(long_len, n_fft, hop), 1 + s // hop, _sync_free(x))
        spec, n_valid = _vocode(stft(x, n_fft, hop, zero_frames=1), r.float(), n_out, max_bin)
        stretched = istft(spec, long_len, n_fft, hop, n_valid)
        out = interp_cubic(stretched, torch.arange(s, device=x.device, dtype=torch.float64)[None] / r[:, None])
        # Reads at i / r past the stretched length round(L / r) are zero (librosa's fix_length).
        return _zero_past(out, torch.ceil(torch.round(n.double() / r) * r))

    return apply_where(fires, run, wav, semitones, lengths, inplace=inplace)


def interp_cubic(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Catmull-Rom interpolation of x (B, L) at sample positions pos (B, N) >= 0; x is zero outside [0, L).

    Written as the cubic's coefficients from the 4 taps around each position, evaluated by Horner's rule, with
    in-place updates: 4 gathers and ~12 passes over (B, N).

    Args:
        pos: float64 positions (float32 would misplace reads by up to 1/64 sample at 10-s offsets).
    Returns:
        (B, N) in x's dtype.
    """
    xp = torch.nn.functional.pad(x, (1, 3))  # xp[i + 1] = x[i]: room for taps i-1 .. i+2
    base = pos.long().clamp_(max=xp.shape[1] - 4)  # floor, as pos >= 0
    t = pos.frac().to(x.dtype)
    xm, x0, x1, x2 = (xp[:, k:k + xp.shape[1] - 3].gather(1, base) for k in range(4))
    c1 = (x1 - xm).mul_(0.5)
    c3 = (x2 - xm).mul_(0.5).add_((x0 - x1).mul_(1.5))
    c2 = xm.add_(x1, alpha=2.0).sub_(x0, alpha=2.5).sub_(x2, alpha=0.5)
    return c3.mul_(t).add_(c2).mul_(t).add_(c1).mul_(t).add_(x0)


def _zero_past(x: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """In place: x[b, i] = 0 for i >= end[b] (end (B,), any real dtype); on CPU touches only the columns past
    min(end), on CUDA all of them (min() read back to the host would be a sync)."""
    first = 0 if _sync_free(x) else int(end.min().clamp(0, x.shape[1]))
    if first < x.shape[1]:
        cols = torch.arange(first, x.shape[1], device=x.device, dtype=end.dtype)
        x[:, first:].masked_fill_(cols[None] >= end[:, None], 0.0)
    return x


def _full_lengths(wav: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    if lengths is None:
        return torch.full((wav.shape[0],), wav.shape[1], device=wav.device, dtype=torch.long)
    return lengths.to(wav.device)
