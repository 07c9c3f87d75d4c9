"""Two-view waveform augmentation before masking (docs/method.md §3, paper Table 8), batched in torch on CPU or GPU.

Per view and per example, independently, the authors run on CPU:

1. roll-and-magnitude: circular shift by an offset uniform over the clip, times Beta(10, 10) + 0.5;
2. audiomentations ``Compose`` in this order (p = 1 for the chain, each transform with its own p):
   PolarityInversion, TimeStretch, AddGaussianSNR, Gain, HighPassFilter, BandStopFilter, PitchShift;
3. mean removal, fbank, pad/cut, normalisation (:func:`audiomosaic.frontend.fbank_batch`).

Here the whole (B, S) batch goes through each step at once: the parameters of all examples and both views come
from :func:`sample_params` (one ``torch.Generator``), each operation is a function of the batch, its (B,)
parameters and a (B,) ``fires`` mask (:mod:`audiomosaic.augment.filters` holds the filters,
:mod:`audiomosaic.augment.vocoder` the stretch and pitch shift), and :class:`TwoViewAugment` chains them, running both
views as one batch of 2B rows.

Implementation choices (each is tested):

- Parameter laws follow audiomentations: uniform rate/SNR/gain/semitones/bandwidth fraction, filter cutoff and
  centre uniform on the mel scale, roll-off drawn from the multiples of 6 dB/oct in range (Butterworth order
  N = roll-off / 6, so 2, 3 or 4).
- The three scalar multiplies (roll magnitude, polarity, gain) are fused into one multiply c right after the
  roll, and the two filters share one rfft. Both are exact up to float rounding: the vocoder, the filters and the
  resampler are homogeneous, and the noise's RMS follows the signal's, so it scales by |c| whether the gain comes
  before or after it (tested against the unfused chain, sample for sample).
- ``lengths``: every example behaves as if processed alone at its valid length L: the roll is circular over
  [0, L), the noise power is measured and added over [0, L), stretched content ends at round(L / rate), and
  samples at or past L are zero in the output. The FFT filters stay circular over the whole buffer.
- Noise is drawn on the batch's device by a generator seeded from ``generator`` (drawing 2B x S normals on a
  CPU generator and copying them would dominate a GPU step); every other random number is drawn on
  ``generator``'s device and moved.
- On CUDA the chain never reads data back to the host (:func:`audiomosaic.augment.filters.sync_free`: every row
  is computed and the firing ones kept, sizes come from host-side bounds); on CPU it skips the rows that do not
  fire and the frames that hold only zeros. Both formulations are tested against each other on CPU.
"""
from __future__ import annotations

import math

import torch

from audiomosaic.augment.filters import (
    apply_where,
    bandstop,
    fft_filter,
    filter_response,
    highpass,
    map_rows,
    sync_free,
)
from audiomosaic.augment.vocoder import HOP, N_FFT, pitch_shift, time_stretch
from audiomosaic.config import AugmentConfig, AugmentPreset, FrontendConfig
from audiomosaic.frontend import fbank_batch

__all__ = ["PRESET_OPS", "TwoViewAugment", "add_noise_snr", "apply_chain", "bandstop", "gain_db", "highpass",
           "pitch_shift", "polarity", "roll_mag", "sample_params", "time_stretch", "two_view_fbank"]

# The authors' cumulative presets (docs/method.md §3); roll_mag is switched separately by AugmentConfig.roll_mag.
# The names are AugmentConfig.preset's choice set, ``AugmentPreset`` (config.py); tests/test_augment.py checks that
# this table covers exactly those names, in their order.
PRESET_OPS: dict[AugmentPreset, tuple[str, ...]] = {
    "none": (),
    "aug2": ("polarity", "time_stretch"),
    "aug4": ("polarity", "time_stretch", "noise", "gain"),
    "aug6": ("polarity", "time_stretch", "noise", "gain", "highpass", "bandstop"),
    "full": ("polarity", "time_stretch", "noise", "gain", "highpass", "bandstop", "pitch"),
}
OPS = PRESET_OPS["full"]

# Column of each uniform draw in sample_params: fixed, so a preset never changes another op's parameters.
_U = ("roll", "polarity", "time_stretch", "rate", "noise", "snr", "gain", "gain_db", "highpass", "hp_mel",
      "hp_order", "bandstop", "bs_mel", "bs_frac", "bs_order", "pitch", "semitones")


# ------------------------------------------------------------------------------------------------------------
# Element-wise operations
# ------------------------------------------------------------------------------------------------------------


def polarity(wav: torch.Tensor, fires: torch.Tensor) -> torch.Tensor:
    """PolarityInversion: -wav on the rows where ``fires`` (B,). wav (B, S) -> (B, S)."""
    return torch.where(fires[:, None], -wav, wav)


def gain_db(wav: torch.Tensor, db: torch.Tensor, fires: torch.Tensor) -> torch.Tensor:
    """Gain: wav * 10^(db / 20) on the rows where ``fires``. wav (B, S), db and fires (B,)."""
    return torch.where(fires[:, None], wav * torch.pow(10.0, db / 20.0)[:, None].to(wav.dtype), wav)


def roll_mag(wav: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor,
             lengths: torch.Tensor | None = None, repeat: int = 1) -> torch.Tensor:
    """Circular roll by ``shift`` samples (``np.roll`` direction) within each valid length, times ``scale``.

    Args:
        wav: (B, S).
        shift: (R B,) integer offsets in [0, L).
        scale: (R B,) factors (the authors' Beta(10, 10) + 0.5; the pipeline fuses polarity and gain into it).
        lengths: optional (R B,) valid lengths L (default S); samples at or past L come back zero.
        repeat: R; output row r reads input row r mod B (the chain's two views of each clip without a copy of
            the batch).
    Returns:
        (R B, S): out[i] = scale * wav[(i - shift) mod L] for i < L.
    """
    b, s = wav.shape
    if not sync_free(wav):  # two slice copies per row: 10x cheaper than a gather with a (B, S) int64 index
        shifts = shift.tolist()
        ends = [s] * len(shifts) if lengths is None else lengths.tolist()
        out = torch.empty(len(shifts), s, dtype=wav.dtype)
        for i, (k, n) in enumerate(zip(shifts, ends)):
            src = wav[i % b]
            out[i, k:n] = src[:n - k]
            out[i, :k] = src[n - k:n]
            if n < s:
                out[i, n:] = 0.0
        return out.mul_(scale.to(wav.dtype)[:, None])
    wav = wav.repeat(repeat, 1) if repeat > 1 else wav
    n = torch.arange(s, device=wav.device)[None]
    shift = shift.to(wav.device)[:, None]
    scale = scale.to(wav.device, wav.dtype)[:, None]
    if lengths is None:  # read [x ; x] from offset S - shift: one index pass, no modulo
        return torch.cat([wav, wav], 1).gather(1, (s - shift) + n).mul_(scale)
    length = lengths.to(wav.device)[:, None]
    idx = n - shift
    idx = torch.where(idx < 0, idx + length, idx)  # shift < L, so one wrap is enough
    return torch.where(n < length, wav.gather(1, idx.clamp_(max=s - 1)) * scale, 0.0)


def add_noise_snr(wav: torch.Tensor, snr_db: torch.Tensor, fires: torch.Tensor,
                  generator: torch.Generator | None = None, lengths: torch.Tensor | None = None,
                  inplace: bool = False) -> torch.Tensor:
    """AddGaussianSNR: white noise with RMS = RMS(wav) / 10^(snr / 20), on the rows where ``fires``.

    Args:
        wav: (B, S).
        snr_db, fires: (B,).
        generator: draws the noise; one on another device than ``wav`` seeds a generator on ``wav``'s device.
        lengths: optional (B,) valid lengths: the RMS is measured and the noise added over [0, L) only.
    Returns:
        (B, S).
    """
    gen = _device_generator(generator, wav.device)
    lengths = torch.full((wav.shape[0],), wav.shape[1], device=wav.device) if lengths is None else lengths

    def run(x: torch.Tensor, snr: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        if not sync_free(x) and bool((n >= x.shape[1]).all()):  # full-length rows (CPU): no mask, in place
            rms = torch.linalg.vector_norm(x, dim=1) / math.sqrt(x.shape[1])
            noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            return noise.mul_((rms * torch.pow(10.0, -snr / 20.0)).to(x.dtype)[:, None]).add_(x)
        valid = (torch.arange(x.shape[1], device=x.device)[None] < n.to(x.device)[:, None]).to(x.dtype)
        rms = ((x.square() * valid).sum(1) / n.clamp(min=1)).sqrt()
        noise_rms = (rms * torch.pow(10.0, -snr / 20.0)).to(x.dtype)
        noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        return x + noise * (noise_rms[:, None] * valid)

    return apply_where(fires, run, wav, snr_db, lengths, chunk=False, inplace=inplace)


def _device_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    if generator is None or generator.device == torch.device(device):
        return generator
    seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
    return torch.Generator(device=device).manual_seed(seed)


# ------------------------------------------------------------------------------------------------------------
# Parameters
# ------------------------------------------------------------------------------------------------------------


def _mel(hz: float) -> float:
    return 2595.0 * math.log10(1.0 + hz / 700.0)  # audiomentations' mel scale


def _from_mel(u: torch.Tensor, lo_hz: float, hi_hz: float) -> torch.Tensor:
    """Map uniforms in [0, 1) to frequencies uniform on the mel scale between lo_hz and hi_hz."""
    mel = _mel(lo_hz) + u * (_mel(hi_hz) - _mel(lo_hz))
    return 700.0 * (torch.pow(10.0, mel / 2595.0) - 1.0)


def _uniform(u: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    return bounds[0] + u * (bounds[1] - bounds[0])


def _rolloff(u: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    """Roll-off in dB/oct: a uniformly drawn multiple of 6 in [lo, hi] (audiomentations' Butterworth orders)."""
    lo, hi = math.ceil(bounds[0] / 6.0), math.floor(bounds[1] / 6.0)
    if hi < lo or lo < 1:
        raise ValueError(f"augment.filter_rolloff_db={bounds} must contain a multiple of 6 >= 6")
    return 6.0 * (lo + (u * (hi - lo + 1)).floor().clamp(max=hi - lo))


def _noise_seed(generator: torch.Generator | None, gdev: torch.device) -> torch.Tensor:
    """A host int64 scalar that seeds the noise generator, drawn without a host-device sync."""
    if gdev.type != "cuda":
        return torch.randint(0, 2**62, (), generator=generator, device=gdev)
    g = generator if generator is not None else torch.cuda.default_generators[
        gdev.index if gdev.index is not None else torch.cuda.current_device()]
    # A CUDA generator's state (seed, Philox offset) lives on the host and the draws above advanced the offset,
    # so this is a fresh, reproducible seed per call; reading a device draw back would stall the stream.
    return torch.tensor((g.initial_seed() * 0x9E3779B97F4A7C15 + g.get_offset()) % 2**62)


def sample_params(cfg: AugmentConfig, batch: int, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Draw the parameters of every example and both views independently.

    Every random number comes from ``generator`` (on its own device; the global RNG when None) in a fixed order,
    so a preset only switches operations off and never changes the draws of the others.

    Args:
        cfg: probabilities, ranges and preset.
        batch: B.
        generator: optional torch.Generator.
        device: where the returned tensors live.
    Returns:
        ``{name: (2, B) tensor}``: ``roll`` (uniform in [0, 1), the offset as a fraction of the length),
        ``mag`` (Beta(10, 10) + 0.5, or 1), one bool ``<op>_fires`` per operation of :data:`OPS`, and
        ``stretch_rate``, ``snr_db``, ``gain_db``, ``highpass_hz``, ``highpass_rolloff``, ``bandstop_center_hz``,
        ``bandstop_fraction``, ``bandstop_rolloff``, ``pitch_semitones``; plus ``noise_seed`` (scalar int64)
        that seeds the device generator for the noise.
    """
    if cfg.preset not in PRESET_OPS:
        raise ValueError(f"augment.preset={cfg.preset!r}; allowed: {', '.join(PRESET_OPS)}")
    gdev = generator.device if generator is not None else torch.device(device)
    u = dict(zip(_U, torch.rand(len(_U), 2, batch, generator=generator, device=gdev).to(device)))
    # Beta(10, 10) is the 10th smallest of 19 uniforms (order statistics): exact and generator-seeded.
    beta = torch.rand(2, batch, 19, generator=generator, device=gdev).kthvalue(10, dim=-1).values.to(device)
    seed = _noise_seed(generator, gdev)
    active = PRESET_OPS[cfg.preset]
    prob = {"polarity": cfg.p_polarity, "time_stretch": cfg.p_time_stretch, "noise": cfg.p_noise,
            "gain": cfg.p_gain, "highpass": cfg.p_highpass, "bandstop": cfg.p_bandstop, "pitch": cfg.p_pitch}
    out = {f"{op}_fires": (u[op] < prob[op]) & (op in active) for op in OPS}
    out.update(
        roll=u["roll"] if cfg.roll_mag else torch.zeros_like(u["roll"]),
        mag=beta + 0.5 if cfg.roll_mag else torch.ones_like(beta),
        stretch_rate=_uniform(u["rate"], cfg.stretch_rate),
        snr_db=_uniform(u["snr"], cfg.snr_db),
        gain_db=_uniform(u["gain_db"], cfg.gain_db),
        highpass_hz=_from_mel(u["hp_mel"], *cfg.highpass_hz),
        highpass_rolloff=_rolloff(u["hp_order"], cfg.filter_rolloff_db),
        bandstop_center_hz=_from_mel(u["bs_mel"], *cfg.bandstop_center_hz),
        bandstop_fraction=_uniform(u["bs_frac"], cfg.bandstop_bandwidth),
        bandstop_rolloff=_rolloff(u["bs_order"], cfg.filter_rolloff_db),
        pitch_semitones=_uniform(u["semitones"], cfg.pitch_semitones),
        noise_seed=seed,
    )
    return out


# ------------------------------------------------------------------------------------------------------------
# The chain
# ------------------------------------------------------------------------------------------------------------


def _filters(x: torch.Tensor, p: dict[str, torch.Tensor], sample_rate: int, inplace: bool = False) -> torch.Tensor:
    """High-pass then band-stop as one rfft pass: the product of the two (or one) magnitude responses."""
    def run(x: torch.Tensor, hp: torch.Tensor, fc: torch.Tensor, hro: torch.Tensor, bs: torch.Tensor,
            c: torch.Tensor, frac: torch.Tensor, bro: torch.Tensor) -> torch.Tensor:
        return fft_filter(x, filter_response(x.shape[-1], hp, fc, hro, bs, c, c * frac, bro, sample_rate))

    fires = p["highpass_fires"] | p["bandstop_fires"]
    return apply_where(fires, run, x, p["highpass_fires"], p["highpass_hz"], p["highpass_rolloff"],
                       p["bandstop_fires"], p["bandstop_center_hz"], p["bandstop_fraction"], p["bandstop_rolloff"],
                       chunk=False, inplace=inplace)


def apply_chain(wav: torch.Tensor, p: dict[str, torch.Tensor], sample_rate: int = 16000,
                lengths: torch.Tensor | None = None, n_fft: int = N_FFT, hop: int = HOP,
                max_semitones: float | None = None, repeat: int = 1) -> torch.Tensor:
    """Run one view of the chain on a batch, given its drawn parameters.

    Args:
        wav: (N / R, S) float waveforms (R = ``repeat``, default 1).
        p: ``sample_params`` output for one view (or both views flattened): (N,) tensors plus ``noise_seed``.
        sample_rate: Hz.
        lengths: optional (N,) valid lengths (see the module docstring).
        n_fft, hop: the phase vocoder's STFT (``AugmentConfig.vocoder_n_fft`` / ``vocoder_hop``).
        max_semitones: the pitch range's upper bound (see :func:`audiomosaic.augment.vocoder.pitch_shift`).
        repeat: R: ``wav`` holds N / R clips and row r of the result augments clip r mod (N / R) (the two views
            of :class:`TwoViewAugment` without a copy of the batch); ``p`` and ``lengths`` have N rows.
    Returns:
        (N, S) float32 augmented waveforms.
    """
    x = wav.float()
    rows = x.shape[0] * repeat
    n_valid = torch.full((rows,), x.shape[1], device=x.device) if lengths is None else lengths.to(x.device)
    # checked on CPU only: on CUDA reading the result back is a host sync per step (the collate bounds lengths)
    if not sync_free(x) and bool(((n_valid < 1) | (n_valid > x.shape[1])).any()):
        raise ValueError(f"lengths must lie in [1, {x.shape[1]}], got {int(n_valid.min())}..{int(n_valid.max())}")
    shift = (p["roll"] * n_valid).long().clamp(max=n_valid - 1)
    sign = torch.where(p["polarity_fires"], -1.0, 1.0)
    gain = torch.where(p["gain_fires"], torch.pow(10.0, p["gain_db"] / 20.0), 1.0)
    x = roll_mag(x, shift, p["mag"] * sign * gain, lengths, repeat)  # one multiply; exact by homogeneity (docstring)
    # x is this call's own tensor from here on, so the operations overwrite their firing rows in place
    x = time_stretch(x, p["stretch_rate"], p["time_stretch_fires"], n_valid, n_fft, hop, inplace=True)
    gen = torch.Generator(device=x.device).manual_seed(int(p["noise_seed"]))
    x = add_noise_snr(x, p["snr_db"], p["noise_fires"], gen, n_valid, inplace=True)
    x = _filters(x, p, sample_rate, inplace=True)
    x = pitch_shift(x, p["pitch_semitones"], sample_rate, p["pitch_fires"], n_valid, n_fft, hop, max_semitones,
                    inplace=True)
    if lengths is not None:
        x = torch.where(torch.arange(x.shape[1], device=x.device)[None] < n_valid[:, None], x, 0.0)
    return x


class TwoViewAugment:
    """Callable that turns a (B, S) batch into two independently augmented (B, S) views.

    Example::

        aug = TwoViewAugment(AugmentConfig(preset="full"))
        view_a, view_b = aug(wav, torch.Generator().manual_seed(0))
    """

    def __init__(self, cfg: AugmentConfig = AugmentConfig(), sample_rate: int = 16000) -> None:
        if cfg.preset not in PRESET_OPS:
            raise ValueError(f"augment.preset={cfg.preset!r}; allowed: {', '.join(PRESET_OPS)}")
        if cfg.vocoder_hop < 1 or cfg.vocoder_n_fft % cfg.vocoder_hop:
            raise ValueError(f"augment.vocoder_n_fft={cfg.vocoder_n_fft} must be a multiple of vocoder_hop")
        self.cfg = cfg
        self.sample_rate = sample_rate

    def __call__(self, wav: torch.Tensor, generator: torch.Generator | None = None,
                 lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Args:
            wav: (B, S) waveforms at ``sample_rate``, on any device.
            generator: optional torch.Generator seeding every draw.
            lengths: optional (B,) valid lengths of zero-padded clips.
        Returns:
            Two (B, S) float32 tensors on ``wav``'s device.
        """
        both = self.both(wav, generator, lengths)
        return both[:wav.shape[0]], both[wav.shape[0]:]

    def both(self, wav: torch.Tensor, generator: torch.Generator | None = None,
             lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The two views as one (2B, S) batch, view-major: rows [A ; B]."""
        return self.views(wav, generator, lengths, 2)

    def views(self, wav: torch.Tensor, generator: torch.Generator | None = None,
              lengths: torch.Tensor | None = None, n: int = 2) -> torch.Tensor:
        """The first ``n`` (1 or 2) views as one (nB, S) batch, view-major. Both views' parameters are always
        drawn, so the generator advances alike for any ``n`` and view A gets the same parameters (its noise
        samples, drawn for the whole batch, differ)."""
        if wav.ndim != 2:
            raise ValueError(f"TwoViewAugment expects (B, samples), got shape {tuple(wav.shape)}")
        b = wav.shape[0]
        p = sample_params(self.cfg, b, generator, wav.device)
        flat = {k: v if v.ndim == 0 else v[:n].reshape(n * b) for k, v in p.items()}  # view-major: rows [A ; B]
        lens = None if lengths is None else lengths.repeat(n)
        return apply_chain(wav, flat, self.sample_rate, lens, self.cfg.vocoder_n_fft, self.cfg.vocoder_hop,
                           max(self.cfg.pitch_semitones), repeat=n)


def views_fbank(wav: torch.Tensor, cfg_aug: AugmentConfig = AugmentConfig(),
                cfg_frontend: FrontendConfig = FrontendConfig(), generator: torch.Generator | None = None,
                lengths: torch.Tensor | None = None, n: int = 2) -> torch.Tensor:
    """Augment the first ``n`` views and compute their normalised fbanks (docs/method.md §3 step 3; fbank_batch
    removes the mean). wav (B, S) at ``cfg_frontend.sample_rate`` -> (nB, 1, target_frames, num_mel_bins),
    view-major."""
    views = TwoViewAugment(cfg_aug, cfg_frontend.sample_rate).views(wav, generator, lengths, n)
    if lengths is None:  # CPU: row chunks, as the vocoder ops (augment_filters.CPU_CHUNK_SAMPLES)
        return map_rows(lambda x: fbank_batch(x, cfg_frontend), views)
    return map_rows(lambda x, m: fbank_batch(x, cfg_frontend, m), views, lengths.to(views.device).repeat(n))


def two_view_fbank(wav: torch.Tensor, cfg_aug: AugmentConfig = AugmentConfig(),
                   cfg_frontend: FrontendConfig = FrontendConfig(), generator: torch.Generator | None = None,
                   lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Both views' normalised fbanks, each (B, 1, target_frames, num_mel_bins) (:func:`views_fbank`)."""
    spec = views_fbank(wav, cfg_aug, cfg_frontend, generator, lengths, 2)
    return spec[:wav.shape[0]], spec[wav.shape[0]:]
