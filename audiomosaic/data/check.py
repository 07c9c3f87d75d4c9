"""``python -m audiomosaic data check MANIFEST``: read every file of a manifest and report the bad ones.

Unusable (exit status 1; the datasets skip these files, so they silently shrink an epoch):
``missing``, ``unreadable`` (libsndfile cannot decode it: garbage, wrong format, broken header), ``empty``
(0 bytes or 0 samples), ``non-finite`` (NaN/inf samples in a float file) and ``too-short`` (less than one 25 ms
analysis frame: the fbank has no frame).

Warnings (usable; reported because they often reveal a pipeline mistake): ``all-zero`` (digital silence is valid
audio, but a whole file of it usually is an export error), ``resample`` (not 16 kHz: converted on load),
``multichannel`` (mixed to mono on load), ``over-an-hour`` (decoded whole on every access: slow and memory-hungry)
and ``truncated`` (a WAV whose header promises more data than the file holds: the readable part is used).
"""
from __future__ import annotations

import os
import struct
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf

from audiomosaic.data.manifest import load_manifest

UNUSABLE = ("missing", "unreadable", "empty", "non-finite", "too-short")
WARNINGS = ("all-zero", "resample", "multichannel", "over-an-hour", "truncated")


@dataclass(frozen=True)
class Finding:
    path: str
    reason: str  # one of UNUSABLE + WARNINGS
    detail: str = ""

    @property
    def unusable(self) -> bool:
        return self.reason in UNUSABLE


@dataclass(frozen=True)
class CheckReport:
    n_files: int
    findings: list[Finding] = field(default_factory=list)

    @property
    def unusable_paths(self) -> list[str]:
        return sorted({f.path for f in self.findings if f.unusable})

    @property
    def exit_code(self) -> int:
        return 1 if self.unusable_paths else 0

    def counts(self) -> Counter[str]:
        return Counter(f.reason for f in self.findings)

    def format(self) -> str:
        """Per-file lines (unusable first), then counts per reason and a summary line."""
        lines = [f"{'UNUSABLE' if f.unusable else 'warning '}  {f.reason:<13} {f.path}" + (f"  ({f.detail})"
                 if f.detail else "") for f in sorted(self.findings, key=lambda f: (not f.unusable, f.path))]
        counts = self.counts()
        lines += ["per reason:"] if counts else []
        lines += [f"  {r:<13} {counts[r]:>7}  {'unusable' if r in UNUSABLE else 'warning'}"
                  for r in (*UNUSABLE, *WARNINGS) if counts[r]]
        flagged = len({f.path for f in self.findings if not f.unusable} - set(self.unusable_paths))
        lines.append(f"checked {self.n_files} files: {len(self.unusable_paths)} unusable, {flagged} with warnings "
                     f"only, {self.n_files - len(self.unusable_paths) - flagged} clean")
        return "\n".join(lines)


def _wav_declared_frames(path: str, channels: int, bytes_per_sample: int) -> int | None:
    """Frames the RIFF ``data`` chunk header declares (None if not a plain RIFF/WAVE or size unknown)."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                return None if size in (0, 0xFFFFFFFF) else size // (channels * bytes_per_sample)
            f.seek(size + (size & 1), os.SEEK_CUR)


_BYTES = {"PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}


def check_file(path: str, sample_rate: int = 16000, frame_ms: float = 25.0, max_seconds: float = 3600.0
               ) -> list[Finding]:
    """Every problem of one file (empty list = clean)."""
    if not os.path.isfile(path):
        return [Finding(path, "missing")]
    if os.path.getsize(path) == 0:
        return [Finding(path, "empty", "0 bytes")]
    try:
        info = sf.info(path)
    except Exception as e:  # libsndfile raises for anything it cannot parse
        return [Finding(path, "unreadable", str(e).splitlines()[0])]
    if info.frames == 0:
        return [Finding(path, "empty", "0 samples")]
    out = []
    if info.frames < info.samplerate * frame_ms / 1000:
        out.append(Finding(path, "too-short", f"{info.frames} samples at {info.samplerate} Hz < {frame_ms:g} ms"))
    if info.samplerate != sample_rate:
        out.append(Finding(path, "resample", f"{info.samplerate} Hz -> {sample_rate} Hz"))
    if info.channels != 1:
        out.append(Finding(path, "multichannel", f"{info.channels} channels -> mono"))
    if info.duration > max_seconds:
        out.append(Finding(path, "over-an-hour", f"{info.duration / 3600:.2f} h"))
    if info.format == "WAV" and info.subtype in _BYTES:
        declared = _wav_declared_frames(path, info.channels, _BYTES[info.subtype])
        if declared is not None and declared > info.frames:
            out.append(Finding(path, "truncated", f"header declares {declared} frames, file holds {info.frames}"))
    return out + _scan_samples(path, info.samplerate)


def _scan_samples(path: str, sr: int) -> list[Finding]:
    """Decode in one-minute blocks (bounded memory for long files): non-finite values, digital silence."""
    finite, nonzero = True, False
    try:
        for block in sf.blocks(path, blocksize=60 * sr, dtype="float32", always_2d=True):
            finite = finite and bool(np.isfinite(block).all())
            nonzero = nonzero or bool(np.any(block != 0))
    except Exception as e:
        return [Finding(path, "unreadable", f"decode failed: {str(e).splitlines()[0]}")]
    if not finite:
        return [Finding(path, "non-finite", "NaN or inf samples")]
    return [] if nonzero else [Finding(path, "all-zero", "digital silence")]


def check_manifest(manifest: str | os.PathLike, workers: int = 4, **loader_kwargs) -> CheckReport:
    """Check every file of a manifest (any form :func:`~.manifest.load_manifest` reads)."""
    paths = load_manifest(manifest, **loader_kwargs).paths
    with ThreadPoolExecutor(max(1, workers)) as pool:  # libsndfile releases the GIL while decoding
        findings = [f for fs in pool.map(check_file, paths) for f in fs]
    return CheckReport(len(paths), findings)
