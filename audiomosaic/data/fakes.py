"""Offline "deepfake" generators for the spoof recipe (:mod:`.spoof`): audio-to-audio and label-to-audio.

Audio-to-audio (the ATA track, content kept): Griffin-Lim from a mel or a linear magnitude spectrogram
(torchaudio transforms), the kit's phase vocoder there and back (time stretch by r then by 1/r), and lossy codec
round trips through libsndfile (MP3, Vorbis, Opus; :func:`codec_available` says which the installed libsndfile
writes). Label-to-audio (the TTA track, generated from the class label alone): espeak-ng voices that the bona fide
corpus never uses (``tta_a``: the Klatt-synthesiser variants, ``tta_b``: robot/whisper variants) for words;
additive (``tta_a``) or FM (``tta_b``) synthesis for instrument notes; the General MIDI drum kits of the pip
SoundFonts (TimGM6mb for ``tta_a``, Merlin for ``tta_b``) for drum hits.

Every output is matched to its source clip: same length, onset-aligned (label-to-audio), same RMS level; the
builder writes both as 16 kHz 16-bit WAV, so neither format nor length nor level separates real from fake.
All functions are numpy in, numpy out (torch only inside, single-threaded), for spawned pool workers.
"""
from __future__ import annotations

import functools
import io

import numpy as np

from audiomosaic.augment.vocoder import time_stretch
from audiomosaic.data import audio, synth, tts

SR = audio.SAMPLE_RATE
ATA_GENERATORS = ("griffinlim_mel", "phase_vocoder", "mp3", "griffinlim_linear", "vorbis", "opus")
TTA_GENERATORS = ("tta_a", "tta_b")
CODECS = {"mp3": ("MP3", "MPEG_LAYER_III"), "vorbis": ("OGG", "VORBIS"), "opus": ("OGG", "OPUS")}
# espeak-ng variants reserved for the label-to-audio generators; bona fide speech in these voices is left out.
TTA_VOICES = {"tta_a": ("klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6"),
              "tta_b": ("robosoft", "robosoft2", "robosoft3", "UniRobot", "anikaRobot", "whisper", "whisperf")}
TTA_DRUM_FONTS = {"tta_a": "TimGM6mb", "tta_b": "Merlin"}
# GM percussion keys (bank 128) per drums7 class.
GM_DRUM_KEYS = {"kick": (35, 36), "snare": (38, 40), "hihat": (42, 44, 46), "tom": (41, 43, 45, 47, 48, 50),
                "cymbal": (49, 51, 52, 55, 57, 59), "clap": (39,), "hand_perc": (60, 61, 62, 63, 64, 65, 66)}


def task_kind(task: str) -> str:
    """Which label-to-audio generator family a source task takes: words, notes, drums, or none (speakers)."""
    for prefix, kind in (("kws", "words"), ("inst", "notes"), ("drums", "drums")):
        if task.startswith(prefix):
            return kind
    return "none"


@functools.lru_cache(maxsize=None)
def codec_available(name: str) -> bool:
    """True when libsndfile can write and read back ``name`` (mp3 / vorbis / opus) at 16 kHz."""
    try:
        out = codec_roundtrip(np.sin(np.linspace(0, 400, SR // 4)).astype(np.float32) * 0.3, name)
    except Exception:  # noqa: BLE001 - libsndfile raises several types for a missing encoder
        return False
    return out.size > 0 and bool(np.isfinite(out).all())


def codec_roundtrip(wav: np.ndarray, name: str) -> np.ndarray:
    """Encode to ``name`` in memory and decode back (16 kHz float32; encoder delay left for the matcher)."""
    import soundfile as sf

    fmt, subtype = CODECS[name]
    buf = io.BytesIO()
    sf.write(buf, wav, SR, format=fmt, subtype=subtype, compression_level=0.7)  # low bit rate: audible artefacts
    buf.seek(0)
    data, sr = sf.read(buf, dtype="float32", always_2d=True)
    return audio.resample_np(data.mean(axis=1), sr, SR)


@functools.lru_cache(maxsize=4)
def _transforms(kind: str):
    import torch
    import torchaudio.transforms as T

    torch.set_num_threads(1)
    if kind == "mel":  # 80-band mel magnitude, as a neural vocoder's input, inverted by least squares
        return (T.MelSpectrogram(SR, n_fft=1024, hop_length=256, n_mels=80, power=1.0),
                T.InverseMelScale(n_stft=513, n_mels=80, sample_rate=SR),
                T.GriffinLim(n_fft=1024, hop_length=256, power=1.0, n_iter=32))
    return (T.Spectrogram(n_fft=512, hop_length=128, power=1.0), None,
            T.GriffinLim(n_fft=512, hop_length=128, power=1.0, n_iter=32))


def griffin_lim(wav: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """Magnitude spectrogram (``mel`` or ``linear``) -> Griffin-Lim phase reconstruction, (S,) -> (S,)."""
    import torch

    torch.manual_seed(seed)  # Griffin-Lim starts from random phases
    fwd, inv_mel, gl = _transforms(kind)
    with torch.no_grad():
        mag = fwd(torch.from_numpy(wav.astype(np.float32)))
        if inv_mel is not None:
            mag = inv_mel(mag)
        return gl(mag).numpy()  # length ~ S; the matcher fits it exactly


def vocoder_roundtrip(wav: np.ndarray, rate: float) -> np.ndarray:
    """The kit's phase vocoder: time-stretch by ``rate`` (> 1, faster) and back by 1 / rate; (S,) -> (S,)."""
    import torch


    torch.set_num_threads(1)
    x = torch.from_numpy(wav.astype(np.float32))[None]
    fires = torch.ones(1, dtype=torch.bool)
    with torch.no_grad():
        y = time_stretch(x, torch.tensor([rate]), fires, n_fft=1024, hop=256)
        y = time_stretch(y, torch.tensor([1.0 / rate]), fires, n_fft=1024, hop=256)
    return y[0].numpy()


def _envelope(n: int, rng: np.random.Generator) -> np.ndarray:
    """Attack-decay-sustain-release amplitude envelope over n samples."""
    t = np.arange(n) / SR
    attack = rng.uniform(0.005, 0.05)
    decay = rng.uniform(0.2, 1.5)
    env = np.minimum(t / attack, 1.0) * np.exp(-t / decay)
    release = int(0.75 * n)
    env[release:] *= np.exp(-(t[release:] - t[release]) / 0.08)
    return env


def synth_note(family: str, gen: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """A note of an inst11 family from its label: additive (``tta_a``) or FM (``tta_b``) synthesis."""
    lo, hi = synth.FAMILY_RANGES[family]
    f0 = 440.0 * 2 ** ((rng.integers(lo, hi + 1) - 69) / 12)
    t = np.arange(n) / SR
    if gen == "tta_a":
        alpha, odd = rng.uniform(0.8, 2.0), rng.random() < 0.3  # spectral tilt; clarinet-like odd harmonics
        ks = [k for k in range(1, 40) if k * f0 < SR / 2 and (not odd or k % 2)]
        x = sum(k ** -alpha * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) for k in ks)
    else:
        ratio, index = rng.choice([1.0, 2.0, 3.0, 0.5]), rng.uniform(0.5, 5.0)
        mod_env = np.exp(-t / rng.uniform(0.1, 1.0))  # brighter attack, as FM instruments
        x = np.sin(2 * np.pi * f0 * t + index * mod_env * np.sin(2 * np.pi * ratio * f0 * t))
    return (x * _envelope(n, rng)).astype(np.float32)


def speak(word: str, gen: str, rng: np.random.Generator) -> np.ndarray:
    """The word in an espeak-ng voice reserved for ``gen`` (accent and prosody drawn), trimmed, at 16 kHz."""
    voice = tts.Voice(str(rng.choice(tts.ENGLISH_ACCENTS)), str(rng.choice(TTA_VOICES[gen])),
                      int(rng.integers(120, 211)), int(rng.integers(20, 81)), int(rng.integers(20, 81)))
    e = tts.engine()
    return audio.resample_np(audio.trim_silence(e.say(word.replace("_", " "), voice)), e.sample_rate, SR)


def drum_hit(cls: str, gen: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """A GM-kit hit of a drums7 class from the SoundFont reserved for ``gen``."""
    fonts = {synth.font_id(f): f for f in synth.pip_fonts()}
    font = fonts.get(TTA_DRUM_FONTS[gen]) or next(iter(fonts.values()))
    key = int(rng.choice(GM_DRUM_KEYS[cls]))
    return synth.render_note(font, 0, key, int(rng.integers(70, 127)), n / SR, SR, drums=True)


def generate(source: np.ndarray, generator: str, task: str, label: str, seed: int) -> np.ndarray:
    """A fake of ``source`` (S,) by ``generator``: resynthesised (ATA) or generated from ``label`` (TTA).

    Returns the raw generator output (any length); :func:`match` aligns it to the source.
    """
    rng = np.random.default_rng(seed)
    if generator == "griffinlim_mel":
        return griffin_lim(source, "mel", seed)
    if generator == "griffinlim_linear":
        return griffin_lim(source, "linear", seed)
    if generator == "phase_vocoder":
        return vocoder_roundtrip(source, float(rng.uniform(1.2, 1.5)))
    if generator in CODECS:
        return codec_roundtrip(source, generator)
    kind = task_kind(task)
    if generator not in TTA_GENERATORS or kind == "none":
        raise ValueError(f"generator {generator!r} cannot make a fake of task {task!r}")
    if kind == "words":
        return speak(label, generator, rng)
    if kind == "notes":
        return synth_note(label, generator, len(source), rng)
    return drum_hit(label, generator, len(source), rng)


def onset(wav: np.ndarray, threshold: float = 0.05) -> int:
    """First sample above ``threshold`` x peak (0 for silence)."""
    peak = float(np.abs(wav).max()) if wav.size else 0.0
    return int(np.flatnonzero(np.abs(wav) > threshold * peak)[0]) if peak > 0 else 0


def match(fake: np.ndarray, source: np.ndarray, align_onset: bool) -> np.ndarray:
    """Fit ``fake`` to the source's length (placed at the source's onset when ``align_onset``, after dropping
    its own leading silence) and scale it to the source's RMS. The builder writes sources at -6 dB
    (:data:`HEADROOM`), so that a peakier fake rarely needs the limiter (which would lower its level)."""
    fake = np.nan_to_num(fake.astype(np.float32))
    offset = 0
    if align_onset:
        fake, offset = fake[onset(fake):], onset(source)
    out = audio.fit_length(fake, len(source), min(offset, max(0, len(source) - len(fake))))
    rms_src, rms_fake = float(np.sqrt(np.mean(source ** 2))), float(np.sqrt(np.mean(out ** 2)))
    if rms_fake > 0:
        out = out * (rms_src / rms_fake)
    return audio.limit(out.astype(np.float32))


HEADROOM = 0.5  # bona fide clips are written at half their corpus amplitude, fakes matched to that
