"""Two-view waveform augmentation (audiomosaic.augment.chain, augment_filters, vocoder): each operation on synthetic signals
whose correct output follows from first principles (tone frequencies, tempo, filter magnitudes, SNR), the
parameter laws, and the batching contract (non-firing rows unchanged, seeds reproducible, views independent)."""
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy import signal

from audiomosaic.augment.chain import (OPS, PRESET_OPS, TwoViewAugment, add_noise_snr, apply_chain, bandstop, gain_db,
                                 highpass, pitch_shift, polarity, roll_mag, sample_params, time_stretch,
                                 two_view_fbank)
from audiomosaic.augment.filters import bandstop_response, highpass_response
from audiomosaic.augment.vocoder import istft, phase_vocoder, stft
from audiomosaic.config import AugmentConfig, AugmentPreset, FrontendConfig, choices

SR = 16000


def _tones(freqs, seconds=1.0, amp=0.5):
    t = torch.arange(int(SR * seconds), dtype=torch.float64) / SR
    return (amp * torch.sin(2 * math.pi * torch.as_tensor(freqs, dtype=torch.float64)[:, None] * t)).float()


def _peak_hz(x):
    """Frequency of the largest spectral peak of a 1-D signal (Hann window, zero-padded to 0.06 Hz bins)."""
    n = 1 << 18
    spec = torch.fft.rfft((x * torch.hann_window(x.numel(), dtype=x.dtype)).double(), n=n).abs()
    return spec.argmax().item() * SR / n


def _amplitude(x, f):
    """Least-squares amplitude of the f-Hz sinusoid in x (integer-cycle tones, so it is exact without noise)."""
    t = torch.arange(x.shape[-1], dtype=torch.float64) / SR
    c, s = torch.cos(2 * math.pi * f * t), torch.sin(2 * math.pi * f * t)
    return 2 * torch.sqrt((x.double() @ c) ** 2 + (x.double() @ s) ** 2) / x.shape[-1]


def _all(b):
    return torch.ones(b, dtype=torch.bool)


# ----------------------------------------------------------------------------------------------------------------
# Pitch shift and time stretch
# ----------------------------------------------------------------------------------------------------------------


VOCODERS = [(2048, 512), (2048, 1024)]  # librosa's default and the cheaper 50% overlap (AugmentConfig)


@pytest.mark.parametrize("n_fft,hop", VOCODERS)
def test_pitch_shift_moves_tone_peak_by_semitones(n_fft, hop):
    semis = torch.tensor([-4.0, -2.5, -0.7, 1.0, 3.3, 4.0])
    f0 = torch.tensor([440.0, 1000.0, 2500.0, 300.0, 1500.0, 3000.0])
    out = pitch_shift(_tones(f0), semis, SR, _all(6), n_fft=n_fft, hop=hop)
    assert out.shape == (6, SR)
    for i in range(6):
        got = 12 * math.log2(_peak_hz(out[i, 2000:-2000]) / f0[i].item())
        assert abs(got - semis[i].item()) < 0.3, (i, got)


def _tone_balance(y, f_lo, f_hi):
    """(E_hi - E_lo) / (E_hi + E_lo) of two tones over 5 ms hops (16 ms windows): +1 on high notes, -1 on low."""
    spec = torch.stft(y, 256, 80, window=torch.hann_window(256), return_complex=True).abs().square()
    lo, hi = spec[round(f_lo * 256 / SR)], spec[round(f_hi * 256 / SR)]
    return ((hi - lo) / (hi + lo + 1e-12)).numpy()


@pytest.mark.parametrize("n_fft,hop", VOCODERS)
def test_time_stretch_scales_tempo_and_keeps_length(n_fft, hop):
    seg, n_seg = 4000, 16  # 250 ms notes alternating between two tones
    t = torch.arange(seg * n_seg) / SR
    which = (torch.arange(seg * n_seg) // seg) % 2
    x = torch.where(which == 0, torch.sin(2 * math.pi * 600 * t), torch.sin(2 * math.pi * 1800 * t)) * 0.5
    rates = torch.tensor([0.7, 0.85, 1.0, 1.15, 1.3])
    y = time_stretch(x.expand(5, -1).contiguous(), rates, _all(5), n_fft=n_fft, hop=hop)
    assert y.shape == (5, seg * n_seg)
    ref = _tone_balance(x, 600, 1800)
    grid = np.arange(0.6, 1.4, 0.0025)
    for i, r in enumerate(rates.tolist()):
        end = round(x.numel() / r)  # the stretched clip's length
        if r > 1:  # faster: audiomentations zero-pads the shorter result
            assert torch.all(y[i, end:] == 0) and y[i, end - 200:end].abs().max() > 0.05
        # Tempo: the output should be the input read at rate r; find the rate whose reading matches best.
        out = _tone_balance(y[i, :min(end, x.numel()) - 1000], 600, 1800)
        frames = np.arange(out.size)
        score = [np.mean(out * np.interp(frames * g, np.arange(ref.size), ref)) for g in grid]
        assert abs(grid[int(np.argmax(score))] / r - 1) < 0.02, (r, grid[int(np.argmax(score))])


def _librosa_phase_vocoder(d, rate, hop=512, n_fft=2048):
    """librosa.phase_vocoder's loop (angle arithmetic) on a (T, F) numpy STFT, as a reference."""
    d = d.T
    steps = np.arange(0, d.shape[1], rate)
    out = np.zeros((d.shape[0], len(steps)), dtype=complex)
    phi = hop * np.linspace(0, np.pi, d.shape[0])
    acc = np.angle(d[:, 0])
    d = np.pad(d, [(0, 0), (0, 2)])
    for t, step in enumerate(steps):
        cols, a = d[:, int(step):int(step) + 2], step % 1.0
        out[:, t] = ((1 - a) * np.abs(cols[:, 0]) + a * np.abs(cols[:, 1])) * np.exp(1j * acc)
        dp = np.angle(cols[:, 1]) - np.angle(cols[:, 0]) - phi
        acc += phi + dp - 2 * np.pi * np.round(dp / (2 * np.pi))
    return out.T


@pytest.mark.parametrize("rate", [0.7, 0.93, 1.27])
def test_phase_vocoder_matches_librosa_loop(rate):
    g = torch.Generator().manual_seed(0)
    t = torch.arange(SR) / SR
    x = (torch.sin(2 * math.pi * 300 * t * (1 + t)) + 0.1 * torch.randn(SR, generator=g))[None]
    x[:, 4000:6000] = 0  # digital silence must not stall the phase
    spec = stft(x)
    ref = _librosa_phase_vocoder(spec[0].to(torch.complex128).numpy(), rate)
    got, n_valid = phase_vocoder(spec, torch.tensor([rate]), ref.shape[0] + 3)
    assert n_valid.item() == ref.shape[0]
    assert np.abs(got[0, :ref.shape[0]].numpy() - ref).max() < 1e-4 * np.abs(ref).max()
    assert torch.all(got[0, ref.shape[0]:] == 0)


def _istft_loop(spec, length, n_fft=2048, hop=512):
    """Windowed overlap-add over the given (T, F) frames divided by their summed squared window (librosa)."""
    w = np.hanning(n_fft + 1)[:-1]  # periodic Hann
    total = n_fft + hop * (spec.shape[0] - 1)
    y, env = np.zeros(total + length), np.zeros(total + length)
    for t in range(spec.shape[0]):
        y[t * hop:t * hop + n_fft] += w * np.fft.irfft(spec[t], n=n_fft)
        env[t * hop:t * hop + n_fft] += w**2
    y = np.where(env > 1e-8, y / np.maximum(env, 1e-8), 0.0)
    return y[n_fft // 2:n_fft // 2 + length], env[n_fft // 2:n_fft // 2 + length]


def test_istft_matches_overlap_add_of_each_clips_frames():
    x = torch.randn(3, 12000, generator=torch.Generator().manual_seed(2))
    spec = stft(x)  # (B, T, F)
    n_valid = torch.tensor([spec.shape[1], 9, 2])  # 2: fewer frames than the window overlap
    spec[torch.arange(spec.shape[1])[None] >= n_valid[:, None]] = 0  # as phase_vocoder leaves them
    got = istft(spec, 12000, n_valid=n_valid)
    for i, m in enumerate(n_valid.tolist()):
        ref, env = _istft_loop(spec[i, :m].numpy().astype(np.complex128), 12000)
        ok = env > 1e-2  # at a last frame's outer edge y / w^2 is ill-conditioned (and later cut by the callers)
        assert ok.sum() >= min(12000, 500 * m) and np.abs(got[i].numpy() - ref)[ok].max() < 1e-4
    assert (got[0] - x[0]).abs().max() < 1e-4  # all frames: perfect reconstruction


def test_row_chunks_match_one_batched_pass(monkeypatch):
    import audiomosaic.augment.filters as af

    x = torch.randn(5, 16000, generator=torch.Generator().manual_seed(3))
    rates, semis, on = torch.tensor([0.7, 0.9, 1.0, 1.1, 1.3]), torch.tensor([-4.0, -1.0, 0.5, 2.0, 4.0]), _all(5)
    monkeypatch.setattr(af, "CPU_CHUNK_SAMPLES", 16000)  # one row per chunk, as for 10-s clips
    chunked = time_stretch(x, rates, on), pitch_shift(x, semis, SR, on)
    monkeypatch.setattr(af, "CPU_CHUNK_SAMPLES", 10**9)  # the whole batch at once, as on CUDA
    whole = time_stretch(x, rates, on), pitch_shift(x, semis, SR, on)
    for a, b in zip(chunked, whole):
        assert (a - b).abs().max() < 1e-4


@pytest.mark.parametrize("n_fft,hop", VOCODERS)
def test_time_stretch_at_rate_one_is_identity(n_fft, hop):
    x = torch.randn(2, 20000, generator=torch.Generator().manual_seed(1))
    assert (time_stretch(x, torch.ones(2), _all(2), n_fft=n_fft, hop=hop) - x).abs().max() < 1e-4


# ----------------------------------------------------------------------------------------------------------------
# Filters
# ----------------------------------------------------------------------------------------------------------------


def test_filter_responses_match_scipy_butterworth():
    n = 4000
    w = np.arange(n // 2 + 1) * SR / n
    hp = highpass_response(n, torch.tensor([150.0, 2400.0]), torch.tensor([12.0, 24.0]), SR)
    bs = bandstop_response(n, torch.tensor([300.0, 3000.0]), torch.tensor([597.0, 1500.0]),
                           torch.tensor([18.0, 12.0]), SR)
    for i, (fc, ro) in enumerate([(150.0, 12), (2400.0, 24)]):
        _, h = signal.sosfreqz(signal.butter(ro // 6, fc, "highpass", fs=SR, output="sos"), w, fs=SR)
        assert np.abs(hp[i].numpy() - np.abs(h)).max() < 1e-3
    for i, (c, bw, ro) in enumerate([(300.0, 597.0, 18), (3000.0, 1500.0, 12)]):
        sos = signal.butter(ro // 6, [c - bw / 2, c + bw / 2], "bandstop", fs=SR, output="sos")
        _, h = signal.sosfreqz(sos, w, fs=SR)
        assert np.abs(bs[i].numpy() - np.abs(h)).max() < 1e-3


def test_combined_filter_response_is_the_product_of_the_firing_responses(monkeypatch):
    import audiomosaic.augment.filters as af
    from audiomosaic.augment.filters import filter_response

    n, hp, bs = 4000, torch.tensor([True, False, True, False]), torch.tensor([True, True, False, False])
    fc, hro = torch.tensor([150.0, 900.0, 2400.0, 40.0]), torch.tensor([12.0, 18.0, 24.0, 18.0])
    c, bw, bro = torch.tensor([300.0, 1000.0, 3000.0, 500.0]), torch.tensor([597.0, 800.0, 1500.0, 400.0]), hro.flip(0)
    want = (torch.where(hp[:, None], highpass_response(n, fc, hro, SR), 1.0)
            * torch.where(bs[:, None], bandstop_response(n, c, bw, bro, SR), 1.0))
    got = filter_response(n, hp, fc, hro, bs, c, bw, bro, SR)  # CPU: integer powers row by row
    assert (got - want).abs().max() < 1e-5
    monkeypatch.setattr(af, "SYNC_FREE", True)  # the CUDA formulation (one pow, torch.where)
    assert (filter_response(n, hp, fc, hro, bs, c, bw, bro, SR) - want).abs().max() < 1e-5


def test_bandstop_attenuates_centre_and_keeps_far_tone():
    centre = torch.tensor([1000.0, 400.0, 3000.0])
    frac = torch.tensor([0.5, 1.99, 1.0])  # 1.99: the widest band, the shallowest notch at the centre
    rolloff = torch.tensor([12.0, 12.0, 24.0])
    far = [4000.0, 4000.0, 300.0]
    for tone, want in ((centre.tolist(), "cut"), (far, "pass")):
        x = _tones(tone)
        y = bandstop(x, centre, centre * frac, rolloff, SR, _all(3))
        for i, f in enumerate(tone):
            db = 20 * math.log10(_amplitude(y[i], f) / _amplitude(x[i], f))
            assert db <= -10 if want == "cut" else abs(db) < 1.0, (want, i, db)


def test_highpass_cuts_below_and_passes_above():
    cut = torch.tensor([1000.0, 2400.0])
    rolloff = torch.tensor([12.0, 18.0])
    for tone, want in (([125.0, 300.0], "cut"), ([4000.0, 7000.0], "pass")):
        x = _tones(tone)
        y = highpass(x, cut, rolloff, SR, _all(2))
        for i, f in enumerate(tone):
            db = 20 * math.log10(_amplitude(y[i], f) / _amplitude(x[i], f))
            assert db <= -10 if want == "cut" else abs(db) < 1.0, (want, i, db)


# ----------------------------------------------------------------------------------------------------------------
# Noise, gain, polarity, roll
# ----------------------------------------------------------------------------------------------------------------


def test_noise_hits_requested_snr():
    snr = torch.linspace(5, 40, 8)
    x = _tones(torch.linspace(200, 3000, 8))
    y = add_noise_snr(x, snr, _all(8), torch.Generator().manual_seed(0))
    got = 10 * torch.log10(x.square().mean(1) / (y - x).square().mean(1))
    assert (got - snr).abs().max() < 0.5


def test_noise_respects_lengths():
    x = _tones([500.0, 500.0])
    lengths = torch.tensor([SR, SR // 4])
    x[1, SR // 4:] = 0
    y = add_noise_snr(x, torch.tensor([10.0, 10.0]), _all(2), torch.Generator().manual_seed(0), lengths)
    assert torch.all(y[1, SR // 4:] == 0)
    n = SR // 4
    got = 10 * math.log10(x[1, :n].square().mean() / (y[1, :n] - x[1, :n]).square().mean())
    assert abs(got - 10.0) < 0.5


def test_gain_and_polarity_exact():
    x = torch.randn(4, 1000, generator=torch.Generator().manual_seed(0))
    fires = torch.tensor([True, False, True, False])
    db = torch.tensor([6.0, 6.0, -12.0, 3.0])
    g = gain_db(x, db, fires)
    for i, d in ((0, 6.0), (2, -12.0)):  # exact up to float32 rounding of the factor
        assert torch.allclose(g[i].double(), x[i].double() * 10 ** (d / 20), rtol=2e-7, atol=0)
    assert torch.equal(g[1], x[1]) and torch.equal(g[3], x[3])
    p = polarity(x, fires)
    assert torch.equal(p[0], -x[0]) and torch.equal(p[1], x[1])


def test_roll_mag_repeat_and_sync_free_gather_agree(monkeypatch):
    import audiomosaic.augment.filters as af

    x = torch.randn(3, 500, generator=torch.Generator().manual_seed(1))
    shift, scale = torch.tensor([0, 17, 499, 3, 250, 1]), torch.linspace(0.5, 1.5, 6)
    lengths = torch.tensor([500, 100, 300, 500, 400, 2])
    for lens in (None, lengths):
        s = shift if lens is None else torch.minimum(shift, lens - 1)
        want = roll_mag(x.repeat(2, 1), s, scale, lens)
        assert torch.equal(roll_mag(x, s, scale, lens, repeat=2), want)  # CPU: slice copies
        monkeypatch.setattr(af, "SYNC_FREE", True)  # CUDA: one gather, no .tolist()
        assert torch.equal(roll_mag(x, s, scale, lens, repeat=2), want)
        monkeypatch.setattr(af, "SYNC_FREE", False)


def test_roll_mag_is_scaled_circular_permutation():
    x = torch.randn(3, 500, generator=torch.Generator().manual_seed(0))
    shift = torch.tensor([0, 17, 499])
    y = roll_mag(x, shift, torch.ones(3))
    for i in range(3):
        assert torch.equal(y[i], torch.roll(x[i], int(shift[i])))
    lengths = torch.tensor([500, 100, 300])
    y = roll_mag(x, torch.tensor([3, 99, 150]), torch.full((3,), 2.0), lengths)
    for i, (n, s) in enumerate([(500, 3), (100, 99), (300, 150)]):
        assert torch.equal(y[i, :n], 2.0 * torch.roll(x[i, :n], s)) and torch.all(y[i, n:] == 0)
    mag = sample_params(AugmentConfig(), 20000, torch.Generator().manual_seed(0))["mag"]
    assert mag.min() >= 0.5 and mag.max() <= 1.5
    sd = math.sqrt(10 * 10 / (20**2 * 21))  # Beta(10, 10) standard deviation
    assert abs(mag.mean() - 1.0) < 4 * sd / math.sqrt(mag.numel()) and abs(mag.std() / sd - 1) < 0.05


# ----------------------------------------------------------------------------------------------------------------
# Parameters and batching contract
# ----------------------------------------------------------------------------------------------------------------


def test_firing_rates_within_binomial_interval():
    cfg, n = AugmentConfig(), 20000
    p = sample_params(cfg, n, torch.Generator().manual_seed(0))
    probs = dict(polarity=cfg.p_polarity, time_stretch=cfg.p_time_stretch, noise=cfg.p_noise, gain=cfg.p_gain,
                 highpass=cfg.p_highpass, bandstop=cfg.p_bandstop, pitch=cfg.p_pitch)
    for op in OPS:
        for view in range(2):
            rate = p[f"{op}_fires"][view].float().mean().item()
            half = 2.576 * math.sqrt(probs[op] * (1 - probs[op]) / n)  # 99% normal approximation
            assert abs(rate - probs[op]) < half, (op, view, rate)


def test_preset_table_covers_exactly_the_config_choices():
    # AugmentConfig.preset's choice set is declared once (config.AugmentPreset); the table maps each to its ops
    assert tuple(PRESET_OPS) == choices(AugmentPreset)
    assert all(PRESET_OPS[a] == PRESET_OPS[b][:len(PRESET_OPS[a])] for a, b in zip(PRESET_OPS, list(PRESET_OPS)[1:]))


@pytest.mark.parametrize("preset", list(PRESET_OPS))
def test_presets_switch_operations(preset):
    p = sample_params(AugmentConfig(preset=preset), 2000, torch.Generator().manual_seed(0))
    for op in OPS:
        assert bool(p[f"{op}_fires"].any()) == (op in PRESET_OPS[preset])


def test_parameter_ranges_and_laws():
    cfg = AugmentConfig()
    p = sample_params(cfg, 20000, torch.Generator().manual_seed(0))
    for key, (lo, hi) in dict(stretch_rate=cfg.stretch_rate, snr_db=cfg.snr_db, gain_db=cfg.gain_db,
                              highpass_hz=cfg.highpass_hz, bandstop_center_hz=cfg.bandstop_center_hz,
                              bandstop_fraction=cfg.bandstop_bandwidth, pitch_semitones=cfg.pitch_semitones).items():
        assert p[key].min() >= lo - 1e-3 and p[key].max() <= hi + 1e-3, key
    for key in ("highpass_rolloff", "bandstop_rolloff"):
        assert set(p[key].unique().tolist()) == {12.0, 18.0, 24.0}
    mel = 2595 * torch.log10(1 + p["highpass_hz"] / 700)  # uniform on the mel scale: median at the mel midpoint
    mid = (2595 * math.log10(1 + 20 / 700) + 2595 * math.log10(1 + 2400 / 700)) / 2
    assert abs(mel.median().item() - mid) < 20


def test_views_and_examples_draw_independently():
    p = sample_params(AugmentConfig(), 5000, torch.Generator().manual_seed(0))
    for key in ("stretch_rate", "snr_db", "pitch_semitones", "roll", "mag"):
        a, b = p[key][0], p[key][1]
        assert torch.unique(a).numel() > 4900  # examples differ
        assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1]) < 0.06  # views are uncorrelated
    fa, fb = p["pitch_fires"].float()
    assert abs(torch.corrcoef(torch.stack([fa, fb]))[0, 1]) < 0.06


def test_same_seed_same_views_and_different_seed_differs():
    x = _tones([300.0, 900.0, 2000.0], seconds=0.5)
    aug = TwoViewAugment(AugmentConfig())
    a1, b1 = aug(x, torch.Generator().manual_seed(7))
    a2, b2 = aug(x, torch.Generator().manual_seed(7))
    a3, _ = aug(x, torch.Generator().manual_seed(8))
    assert torch.equal(a1, a2) and torch.equal(b1, b2)
    assert not torch.equal(a1, a3) and not torch.equal(a1, b1)
    assert a1.shape == b1.shape == x.shape and torch.isfinite(a1).all()


def test_rows_where_nothing_fires_are_unchanged():
    x = torch.randn(6, 8000, generator=torch.Generator().manual_seed(0))
    cfg = AugmentConfig(roll_mag=False)
    p = {k: v if v.ndim == 0 else v[0] for k, v in sample_params(cfg, 6, torch.Generator().manual_seed(1)).items()}
    quiet = torch.tensor([True, False, True, False, False, True])
    for op in OPS:
        p[f"{op}_fires"] = p[f"{op}_fires"] & ~quiet
    p["time_stretch_fires"] = ~quiet  # make sure the others do work
    y = apply_chain(x, p, SR)
    assert torch.equal(y[quiet], x[quiet]) and not torch.equal(y[~quiet], x[~quiet])
    rates = torch.full((6,), 1.2)
    assert torch.equal(time_stretch(x, rates, quiet)[~quiet], x[~quiet])
    assert torch.equal(pitch_shift(x, torch.full((6,), 2.0), SR, quiet)[~quiet], x[~quiet])


def test_fused_chain_equals_the_operations_in_the_authors_order():
    x = _tones([300.0, 1200.0, 2500.0, 700.0], seconds=0.5) + 0.05 * torch.randn(4, 8000, generator=torch.Generator())
    drawn = sample_params(AugmentConfig(), 4, torch.Generator().manual_seed(5))
    p = {k: v if v.ndim == 0 else v[0] for k, v in drawn.items()}
    for op in OPS:  # every operation fires somewhere, with a mix of firing and quiet rows
        p[f"{op}_fires"] = torch.tensor([True, False, True, True]) ^ (torch.arange(4) == OPS.index(op) % 4)
    got = apply_chain(x, p, SR)
    shift = (p["roll"] * 8000).long()
    y = roll_mag(x, shift, p["mag"])
    y = polarity(y, p["polarity_fires"])
    y = time_stretch(y, p["stretch_rate"], p["time_stretch_fires"])
    y = add_noise_snr(y, p["snr_db"], p["noise_fires"], torch.Generator().manual_seed(int(p["noise_seed"])))
    y = gain_db(y, p["gain_db"], p["gain_fires"])
    y = highpass(y, p["highpass_hz"], p["highpass_rolloff"], SR, p["highpass_fires"])
    y = bandstop(y, p["bandstop_center_hz"], p["bandstop_center_hz"] * p["bandstop_fraction"], p["bandstop_rolloff"],
                 SR, p["bandstop_fires"])
    y = pitch_shift(y, p["pitch_semitones"], SR, p["pitch_fires"])
    # float rounding only (largest near a stretched clip's end, where the window power is small); a wrong
    # order, scale or filter would differ by O(signal)
    assert (got - y).abs().max() < 1e-3 * y.abs().max()


def test_lengths_zero_the_padding_and_bad_lengths_raise():
    x = _tones([440.0, 440.0], seconds=0.5)
    x[1, 2000:] = 0
    lengths = torch.tensor([8000, 2000])
    a, b = TwoViewAugment(AugmentConfig())(x, torch.Generator().manual_seed(0), lengths)
    assert torch.all(a[1, 2000:] == 0) and torch.all(b[1, 2000:] == 0) and a[1, :2000].abs().max() > 0
    with pytest.raises(ValueError, match="lengths"):
        TwoViewAugment(AugmentConfig())(x, lengths=torch.tensor([8000, 9000]))
    with pytest.raises(ValueError, match="preset"):
        TwoViewAugment(AugmentConfig(preset="nope"))
    with pytest.raises(ValueError, match="vocoder_n_fft"):
        TwoViewAugment(AugmentConfig(vocoder_n_fft=2048, vocoder_hop=600))


def test_two_view_fbank_from_audio_file(tmp_path):
    path = tmp_path / "tone.wav"
    sf.write(path, _tones([700.0], seconds=1.0)[0].numpy(), SR)
    wav = torch.from_numpy(sf.read(path, dtype="float32")[0])[None].repeat(2, 1)
    cfg_fe = FrontendConfig(target_frames=100)
    a, b = two_view_fbank(wav, AugmentConfig(), cfg_fe, torch.Generator().manual_seed(0))
    assert a.shape == b.shape == (2, 1, 100, 128)
    assert torch.isfinite(a).all() and not torch.equal(a, b)
    plain = two_view_fbank(wav, AugmentConfig(preset="none", roll_mag=False), cfg_fe)
    assert torch.equal(plain[0], plain[1])  # nothing random: the two views coincide
    wav[1, 8000:] = 0  # a half-length clip, zero-padded: its frames past the end are the fbank's padding value
    a, _ = two_view_fbank(wav, AugmentConfig(), cfg_fe, torch.Generator().manual_seed(0), torch.tensor([SR, 8000]))
    pad = -cfg_fe.norm_mean / (2 * cfg_fe.norm_std)
    assert torch.allclose(a[1, 0, 49:], torch.full_like(a[1, 0, 49:], pad)) and (a[1, 0, :48] != pad).all()


# ----------------------------------------------------------------------------------------------------------------
# CUDA
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_for_deterministic_ops():
    x = _tones([440.0, 1000.0, 2500.0], seconds=1.0)
    rates, semis, on = torch.tensor([0.8, 1.0, 1.25]), torch.tensor([-3.0, 1.0, 4.0]), _all(3)
    for fn in (lambda w, d: time_stretch(w, rates.to(d), on.to(d)),
               lambda w, d: pitch_shift(w, semis.to(d), SR, on.to(d)),
               lambda w, d: bandstop(w, torch.full((3,), 1000.0, device=d), torch.full((3,), 800.0, device=d),
                                     torch.full((3,), 18.0, device=d), SR, on.to(d))):
        assert (fn(x.cuda(), "cuda").cpu() - fn(x, "cpu")).abs().max() < 1e-3
    a, b = TwoViewAugment(AugmentConfig())(x.cuda(), torch.Generator().manual_seed(0))
    assert a.is_cuda and a.shape == x.shape and torch.isfinite(a).all() and torch.isfinite(b).all()
    c, _ = TwoViewAugment(AugmentConfig())(x.cuda(), torch.Generator().manual_seed(0))
    assert torch.equal(a, c)


def test_pipeline_benchmark_quick_runs():
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "pipeline.py"
    out = subprocess.run([sys.executable, str(script), "--quick", "--no-gpu", "--threads", "1"], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert {r["path"] for r in rows} == {"batched", "per_clip"}
    assert all(r["views_per_s"] > 0 and r["device"] == "cpu" and r["threads"] == 1 for r in rows)
