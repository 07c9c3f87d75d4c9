"""Datasets rendered in the DataLoader worker instead of stored (docs/data.md §3(c): an NSynth-scale note set would
be ~25 GB of WAV, and rendering a note, ~1.2 ms, is cheaper than decoding a file).

The ``large`` recipe writes a JSON spec per dataset under ``<corpus>/onthefly/``: the render parameters plus the
group-held-out split (GM programs for notes, voice variants for speech), so train and test never share a group.
``load_onthefly(spec, split)`` rebuilds the dataset. Samples have the :class:`~.dataset.AudioDataset` layout;
each index maps to fixed parameters (same seed -> same audio), and each worker process opens its own synthesiser.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from audiomosaic.data import synth, tts
from audiomosaic.data.dataset import make_sample, skip_marker
from audiomosaic.data.recipes import SC_V2_WORDS, NotesTask, SpeechSpec, split_groups, stable_hash, task_rng


@dataclass(frozen=True)
class OnTheFlyNotes:
    """Every (font, program of the 11 families, pitch in the family range, velocity) note; target = family."""

    name: str = "notes_large"
    system_fonts: bool = True
    velocities: tuple[int, ...] = (25, 50, 75, 100, 127)
    pitch_step: int = 1
    seconds: float = 4.0
    test_frac: float = 0.25

    def write(self, path: Path, seed: int) -> Path:
        fonts = NotesTask(system_fonts=self.system_fonts).font_files()
        programs = [p for ps in synth.GM_FAMILIES.values() for p in ps]
        split = split_groups([synth.family_of(p) for p in programs], [str(p) for p in programs], self.test_frac,
                             task_rng(seed, self.name))
        spec = {"kind": "notes", **asdict(self), "seed": seed, "fonts": fonts,
                "programs": {s: [p for p in programs if split[str(p)] == s] for s in ("train", "test")}}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(spec, indent=1))
        return path


class SynthNotesDataset(Dataset):
    """Renders SoundFont notes on demand. Items enumerate fonts x programs x pitches x velocities."""

    def __init__(self, fonts: list[str], programs: list[int], velocities: tuple[int, ...] = (100,),
                 pitch_step: int = 1, seconds: float = 4.0, sample_rate: int = 16000) -> None:
        missing = [f for f in fonts if not os.path.isfile(f)]
        if missing or not fonts:
            raise ValueError(f"SoundFont(s) not found: {missing or 'none given'}")
        self.fonts, self.seconds, self.sample_rate = list(fonts), seconds, sample_rate
        self.classes = list(synth.GM_FAMILIES)
        rows = []
        for fi in range(len(fonts)):
            for p in programs:
                lo, hi = synth.FAMILY_RANGES[synth.family_of(p)]
                rows += [(fi, p, k, v) for k in range(lo, hi + 1, pitch_step) for v in velocities]
        self.grid = np.asarray(rows, dtype=np.int32)  # (N, 4): font index, program, pitch, velocity

    def __len__(self) -> int:
        return len(self.grid)

    def __getitem__(self, index: int) -> dict:
        fi, program, pitch, velocity = (int(x) for x in self.grid[index])
        wav = synth.render_note(self.fonts[fi], program, pitch, velocity, self.seconds, self.sample_rate)
        if float(np.sqrt(np.mean(wav ** 2))) < 1e-3:
            return skip_marker(f"{synth.font_id(self.fonts[fi])}:p{program}:k{pitch}:v{velocity}", "silent", index)
        target = np.zeros(len(self.classes), dtype=np.float32)
        target[self.classes.index(synth.family_of(program))] = 1.0
        return make_sample(np.clip(wav, -1.0, 1.0), target, index, None)


@dataclass(frozen=True)
class OnTheFlySpeech:
    """Unlimited prosody draws of the 35 words over every English voice; voice variants are held out."""

    name: str = "speech_large"
    words: tuple[str, ...] = SC_V2_WORDS
    n_items: int = 100_000  # items per epoch (each index is a fixed draw)
    seconds: float = 1.0
    test_frac: float = 0.2
    rt60: tuple[float, float] | None = (0.2, 0.9)
    snr_db: tuple[float, float] | None = (-5.0, 20.0)

    def write(self, path: Path, seed: int) -> Path:
        variants = tts.variants()
        rng = task_rng(seed, self.name)
        test = set(rng.choice(variants, max(1, round(self.test_frac * len(variants))), replace=False).tolist())
        voices = {s: [[a, v] for a in tts.ENGLISH_ACCENTS for v in variants if (v in test) == (s == "test")]
                  for s in ("train", "test")}
        spec = {"kind": "speech", **asdict(self), "seed": seed, "voices": voices}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(spec, indent=1))
        return path


class SpeechDataset(Dataset):
    """Renders espeak-ng words on demand; item i says ``words[i % len(words)]`` with a voice and prosody drawn
    from a generator seeded by (seed, i)."""

    def __init__(self, voices: list[tuple[str, str]], words: tuple[str, ...] = SC_V2_WORDS, n_items: int = 1000,
                 seed: int = 0, seconds: float = 1.0, rt60: tuple[float, float] | None = None,
                 snr_db: tuple[float, float] | None = None, sample_rate: int = 16000) -> None:
        if not voices:
            raise ValueError("SpeechDataset needs at least one (accent, variant) voice")
        self.voices, self.classes, self.n_items, self.seed = [tuple(v) for v in voices], list(words), n_items, seed
        self.seconds, self.rt60, self.snr_db, self.sample_rate = seconds, rt60, snr_db, sample_rate

    def __len__(self) -> int:
        return self.n_items

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, index])
        word = self.classes[index % len(self.classes)]
        accent, variant = self.voices[int(rng.integers(len(self.voices)))]
        voice = tts.Voice(accent, variant, int(rng.integers(120, 211)), int(rng.integers(20, 81)),
                          int(rng.integers(20, 81)))
        spec = SpeechSpec(word, voice, self.seconds, stable_hash(self.seed, index), self.rt60, self.snr_db)
        wav = spec.render(self.sample_rate)
        if wav is None:
            return skip_marker(f"{voice.name}:{word}", "empty synthesis", index)
        target = np.zeros(len(self.classes), dtype=np.float32)
        target[index % len(self.classes)] = 1.0
        return make_sample(wav, target, index, None)


def _range(x: list[float] | None) -> tuple[float, float] | None:
    return (float(x[0]), float(x[1])) if x else None


def load_onthefly(path: str | os.PathLike, split: str = "train", n_items: int | None = None) -> Dataset:
    """Rebuild a dataset from a spec written by the ``large`` recipe.

    Raises:
        ValueError: unknown split or spec kind.
    """
    spec = json.loads(Path(path).read_text())
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, got {split!r}")
    if spec.get("kind") == "notes":
        return SynthNotesDataset(spec["fonts"], spec["programs"][split], tuple(spec["velocities"]),
                                 spec["pitch_step"], spec["seconds"])
    if spec.get("kind") == "speech":
        return SpeechDataset([tuple(v) for v in spec["voices"][split]], tuple(spec["words"]),
                             n_items or spec["n_items"], spec["seed"], spec["seconds"],
                             _range(spec["rt60"]), _range(spec["snr_db"]))
    raise ValueError(f"{path}: unknown on-the-fly spec kind {spec.get('kind')!r}; allowed: notes, speech")


class UnlabelledClips(Dataset):
    """A labelled dataset's clips for the pre-training pool: targets dropped (so that sets with different label
    spaces concatenate), each clip cut or zero-padded to ``clip_samples``, indices shifted by ``index_offset``
    (unique within a concatenation). Skip markers pass through."""

    def __init__(self, base: Dataset, clip_samples: int | None, index_offset: int = 0) -> None:
        self.base, self.clip_samples, self.index_offset = base, clip_samples, index_offset

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        item = self.base[index]
        if "skipped" in item:
            return item
        wav = item["wav"][:item["length"]].numpy()
        return make_sample(wav, np.zeros(0, dtype=np.float32), index + self.index_offset, self.clip_samples)


def onthefly_names(root: str | os.PathLike, names: tuple[str, ...]) -> list[str]:
    """Resolve ``data.onthefly`` against a corpus: ``("all",)`` = every spec in ``<root>/onthefly/``.

    Raises:
        ValueError: a named spec that the corpus lacks (listing the ones it has).
    """
    have = sorted(p.stem for p in (Path(root) / "onthefly").glob("*.json"))
    want = have if tuple(names) == ("all",) else list(names)
    missing = [n for n in want if n not in have]
    if missing:
        raise ValueError(f"data.onthefly: {missing} not in {Path(root) / 'onthefly'}; it has: "
                         f"{', '.join(have) or 'none'} (the large recipe writes notes_large and speech_large)")
    return want
