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

N_FFT = 2048  # librosa.effects.time_stretch / pitch_shift defaults
HOP = 512


@functools.lru_cache(maxsize=8)
def _window(n_fft: int, device: torch.device) -> torch.Tensor:
    return torch.hann_window(n_fft, periodic=True, device=device)  # scipy/librosa 'hann' (fftbins=True)


def stft(x: torch.Tensor, n_fft: int = N_FFT, hop: int = HOP) -> torch.Tensor:
    """librosa-style centred STFT (zero padding) in time-major layout: (B, S) -> (B, 1 + S // hop, n_fft//2+1).

    Time-major so the vocoder's per-example frame lookups copy whole contiguous rows.
    """
    xp = torch.nn.functional.pad(x, (n_fft // 2, n_fft // 2))
    return torch.fft.rfft(xp.unfold(1, n_fft, hop) * _window(n_fft, x.device), dim=-1)


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


def _overlap_add(frames: torch.Tensor, hop: int) -> torch.Tensor:
    """(B, T, n_fft) -> (B, n_fft + (T - 1) hop); n_fft must be a multiple of hop (k = n_fft / hop shifts)."""
    b, t, n_fft = frames.shape
    k = n_fft // hop
    blocks = frames.reshape(b, t, k, hop)
    out = frames.new_zeros(b, t + k - 1, hop)
    for j in range(k):  # k = 4 shifted block adds, not a loop over examples
        out[:, j:j + t] += blocks[:, :, j]
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
    frames = torch.fft.irfft(spec, n=n_fft, dim=-1).mul_(_window(n_fft, spec.device))
    y = _overlap_add(frames, hop)
    # a clip of a few frames needs the general envelope; on CUDA always take it (reading min() back would be a
    # host sync, and the extra pass costs little there)
    if n_valid is not None and (spec.is_cuda or int(n_valid.min()) < k - 1):
        y.mul_(_inverse_envelope(n_valid, t, n_fft, hop))
    else:
        full, tail = _envelopes(t, n_fft, hop, spec.device)
        if n_valid is not None:  # after each clip's last frame the window power is the tail's, not the full one
            pos = n_valid[:, None] * hop + torch.arange(tail.numel(), device=spec.device)[None]
            patched = y.gather(1, pos).mul_(tail)
        y.mul_(full)
        if n_valid is not None:
            y.scatter_(1, pos, patched)
    y = y[:, n_fft // 2:n_fft // 2 + length]
    return y if y.shape[1] == length else torch.nn.functional.pad(y, (0, length - y.shape[1]))


def _cumprod_time(g: torch.Tensor) -> torch.Tensor:
    """Cumulative product along dim 1 of a complex (B, T, F) tensor (in place on CPU).

    CUDA: ``torch.cumprod``. CPU: a two-level blocked scan (prefix products inside blocks of ~sqrt(T) frames, then
    across block ends, then one broadcast multiply) measured 1.7x faster than ``torch.cumprod``'s complex scan and
    3x faster than a plain loop over frames, whose T small multiplies are dominated by call overhead.
    """
    if g.is_cuda:
        return torch.cumprod(g, dim=1)
    b, t, f = g.shape
    k = max(1, math.isqrt(t))
    nb = t // k
    blocks = g[:, :nb * k].view(b, nb, k, f)
    for i in range(1, k):  # ~sqrt(T) steps, each over all blocks
        blocks[:, :, i].mul_(blocks[:, :, i - 1])
    for j in range(1, nb):  # block ends become prefix products
        blocks[:, j, k - 1].mul_(blocks[:, j - 1, k - 1])
    if nb > 1:
        blocks[:, 1:, :k - 1].mul_(blocks[:, :-1, k - 1:].clone())
    for i in range(nb * k, t):  # the < k leftover frames
        g[:, i].mul_(g[:, i - 1])
    return g


def _take_frames(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x[b, idx[b, t]] for x (B, T, F) and idx (B, N) -> (B, N, F), as one row ``index_select`` on the flattened
    (B T, F) view: measured several times faster than advanced indexing, for complex tensors especially."""
    b, t, f = x.shape
    flat = idx + t * torch.arange(b, device=x.device)[:, None]
    return x.reshape(b * t, f).index_select(0, flat.reshape(-1)).view(b, idx.shape[1], f)


def _mag_and_phasors(spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """|X| and X / |X| of a (B, T, F) STFT, each with one extra frame T: zero magnitude, unit phasor 1 (librosa's
    zero padding after the last frame). A zero-magnitude bin gets the phasor 1 (``np.angle(0) = 0``).

    Written with contiguous passes only: re^2 and im^2 in one pass over the interleaved (real) view, their sum,
    rsqrt, then X * rsqrt; ``abs()`` of a complex tensor (hypot) and real ops on strided re / im views measured
    3-6x slower on CPU.
    Returns:
        (B, T + 1, F) float magnitudes and (B, T + 1, F) complex unit phasors.
    """
    b, t_in, n_bins = spec.shape
    sq = torch.view_as_real(spec).square()
    power = torch.add(sq[..., 0], sq[..., 1])  # (B, T, F), contiguous
    del sq
    inv = power.rsqrt_()  # 1 / |X|, inf where |X| = 0
    mag = torch.zeros(b, t_in + 1, n_bins, device=spec.device)
    unit = torch.empty(b, t_in + 1, n_bins, dtype=spec.dtype, device=spec.device)
    unit[:, t_in] = 1.0
    torch.mul(spec, inv, out=unit[:, :t_in])
    torch.reciprocal(inv, out=mag[:, :t_in])  # exactly 0 where |X| = 0
    # silence: 0 * inf above; must not stall the phase (max() == inf: 10x cheaper than isinf().any() on CPU)
    if spec.is_cuda or float(inv.max()) == math.inf:
        unit[:, :t_in].masked_fill_(mag[:, :t_in] == 0, 1.0)
    return mag, unit


def _frame_positions(rate: torch.Tensor, n_out: int, t_in: int) -> tuple[torch.Tensor, torch.Tensor]:
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
      of the frames) enter a short cumulative product; the rest is two row gathers and two multiplies.
    - CUDA (``sync_free``): the rotations of all frames, one gather and ``torch.cumprod`` (no data-dependent
      shapes, so no host sync).

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
    b, t_in, n_bins = spec.shape
    sync_free = spec.is_cuda if sync_free is None else sync_free
    mag, unit = _mag_and_phasors(spec)  # frame t_in: |X| = 0, u = 1
    j, alpha = _frame_positions(rate, n_out, t_in)
    n_valid = (j < t_in).sum(1)  # = #{t : t * rate < T}, as the float32 steps round
    jc = j.clamp(max=t_in)  # frames past the end read the zero frame t_in
    # magnitudes: lerp of frames j and j + 1 (both clamped to the zero frame)
    m = _take_frames(mag, jc).lerp_(_take_frames(mag, (j + 1).clamp_(max=t_in)), alpha[..., None])
    if max_bin is not None:
        m.mul_((torch.arange(n_bins, device=spec.device)[None] <= max_bin[:, None]).to(m.dtype)[:, None])
    k = torch.cat([torch.zeros_like(j[:, :1]), (j[:, :-1] + 1).clamp_(max=t_in)], dim=1)
    if sync_free:
        # rotation into k_t from k_t - 1 for every frame; at t = 0 the start phasor u_0
        prev = torch.cat([torch.zeros_like(k[:, :1]), k[:, 1:] - 1], dim=1)
        rot = _take_frames(unit, k)
        if t_in > 0:
            rot[:, 1:].mul_(_take_frames(unit, prev[:, 1:]).conj())
        return torch.cumprod(rot, dim=1).mul_(m), n_valid
    out = _take_frames(unit, k)
    # events: output frames s >= 1 (inside the input) whose k_s != j_s; their factors u_{k_s} conj(u_{j_s})
    event = (k != jc) & (j < t_in)
    rows, cols = event.nonzero(as_tuple=True)
    if rows.numel():
        flat = unit.view(b * (t_in + 1), n_bins)
        base = rows * (t_in + 1)
        d = flat.index_select(0, base + k[rows, cols]).mul_(flat.index_select(0, base + jc[rows, cols]).conj())
        rank = event.cumsum(1)  # events at or before t; C_t uses those before t
        n_ev = int(rank[:, -1].max())
        factors = torch.ones(b, n_ev + 1, n_bins, dtype=spec.dtype, device=spec.device)
        factors.view(-1, n_bins).index_copy_(0, rows * (n_ev + 1) + rank[rows, cols], d)
        factors = _cumprod_time(factors)
        before = torch.cat([torch.zeros_like(rank[:, :1]), rank[:, :-1]], dim=1)
        out.mul_(_take_frames(factors, before))
    return out.mul_(m), n_valid


def _stretch_frames(length: int, n_fft: int, hop: int) -> int:
    """Output frames whose centred windows touch samples [0, length)."""
    return (length + n_fft // 2) // hop + 1


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
        spec, n_valid = phase_vocoder(stft(x, n_fft, hop), r, _stretch_frames(s, n_fft, hop))
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
        if x.is_cuda and max_semitones is not None:
            long_len = int(math.ceil(s * 2.0 ** (max_semitones / 12.0))) + 2
        else:  # the buffer must fit the slowest stretch; a host sync on CUDA
            long_len = int(math.ceil(s / float(r.min()))) + 2
        max_bin = (r.clamp(max=1.0) * (n_fft // 2)).float()
        spec, n_valid = phase_vocoder(stft(x, n_fft, hop), r.float(), _stretch_frames(long_len, n_fft, hop), max_bin)
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
    first = 0 if x.is_cuda else int(end.min().clamp(0, x.shape[1]))
    if first < x.shape[1]:
        cols = torch.arange(first, x.shape[1], device=x.device, dtype=end.dtype)
        x[:, first:].masked_fill_(cols[None] >= end[:, None], 0.0)
    return x


def _full_lengths(wav: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    if lengths is None:
        return torch.full((wav.shape[0],), wav.shape[1], device=wav.device, dtype=torch.long)
    return lengths.to(wav.device)
