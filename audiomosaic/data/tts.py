"""Pip-only speech synthesis: libespeak-ng from the ``espeakng-loader`` wheel, driven through ctypes (docs/data.md §1.1).

espeak-ng keeps global state and is not thread-safe: use one :class:`Espeak` per process (``engine()`` returns
the process' instance; pools and DataLoader workers each get their own). Output is deterministic for fixed
parameters within one libespeak-ng version, but versions differ, so tests must not hash audio.
"""
from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass

import numpy as np

# espeak_Initialize output mode: synchronous synthesis, audio delivered to our callback.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_PARAM = {"rate": 1, "pitch": 3, "range": 4}  # espeak_PARAMETER enum values

# The English accents of espeak-ng 1.52 (``en-gb`` is not a voice name there: ``en`` is British).
ENGLISH_ACCENTS = ("en-us", "en", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp", "en-029",
                   "en-us-nyc")


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: an accent plus a voice variant (``en-us+f3``) and its prosody."""

    accent: str
    variant: str
    rate: int = 170  # words per minute
    pitch: int = 50  # 0-100
    prange: int = 50  # pitch range, 0-100

    @property
    def name(self) -> str:
        return f"{self.accent}+{self.variant}"


class Espeak:
    """A ctypes binding of libespeak-ng (one per process)."""

    def __init__(self) -> None:
        import espeakng_loader

        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                           ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._chunks: list[np.ndarray] = []
        data = espeakng_loader.get_data_path().encode()
        self.sample_rate = int(self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0))
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({self.sample_rate}) with data path {data!r}")
        callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                         ctypes.c_void_p)
        self._callback = callback_type(self._collect)  # must stay referenced while the library may call it
        self._lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav: ctypes.POINTER(ctypes.c_short), n: int, events: int) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        return 0

    def say(self, text: str, voice: Voice) -> np.ndarray:
        """Synthesise ``text`` -> (S,) float32 in [-1, 1] at ``self.sample_rate`` (22.05 kHz).

        Raises:
            ValueError: espeak-ng does not know the voice name.
        """
        if self._lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice.name!r}; accents: {', '.join(ENGLISH_ACCENTS)}, "
                             f"variants: {', '.join(variants()[:8])}, ...")
        for key, value in (("rate", voice.rate), ("pitch", voice.pitch), ("range", voice.prange)):
            self._lib.espeak_SetParameter(_PARAM[key], int(value), 0)
        self._chunks.clear()
        b = text.encode()
        self._lib.espeak_Synth(b, len(b) + 1, 0, _POS_CHARACTER, 0, 0, None, None)
        self._lib.espeak_Synchronize()
        if not self._chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(self._chunks).astype(np.float32) / 32768.0


_ENGINES: dict[int, Espeak] = {}


def engine() -> Espeak:
    """This process' synthesiser (created on first use; keyed by pid so forked children make their own)."""
    pid = os.getpid()
    if pid not in _ENGINES:
        _ENGINES[pid] = Espeak()
    return _ENGINES[pid]


@functools.lru_cache(maxsize=1)
def variants() -> list[str]:
    """Voice variant names shipped with the wheel (``f1 .. f5, m1 .. m8, klatt, whisper, Andy, ...``), sorted.

    Names with spaces are left out: espeak's ``accent+variant`` syntax cannot express them.
    """
    import espeakng_loader

    folder = os.path.join(espeakng_loader.get_data_path(), "voices", "!v")
    return sorted(v for v in os.listdir(folder) if " " not in v)
