"""torch Datasets over a :class:`~.manifest.Manifest`, the batch collate function and the skipped-file report.

A sample is a dict ``{"wav": (S,) float32, "length": int, "target": (C,) float32 multi-hot, "index": int}``.
A file that cannot be used (decode error, no samples, non-finite values) yields a *marker*
``{"skipped": path, "error": reason, "index": i}`` instead of raising, so one bad file never kills an epoch;
:func:`collate` drops markers and lists their paths in ``batch["skipped"]``, and :class:`SkipCounter` turns them
into an end-of-epoch report. Everything here is module-level (no lambdas), so spawn-started workers can pickle it.
"""
from __future__ import annotations

import os
import warnings
from collections import Counter

import numpy as np
import torch
from torch.utils.data import Dataset

from audiomosaic.data.audio import SAMPLE_RATE, read_audio
from audiomosaic.data.manifest import Manifest


def skip_marker(path: str, error: str, index: int) -> dict:
    """The placeholder a dataset returns for an unusable sample (dropped by :func:`collate`)."""
    return {"skipped": path, "error": error, "index": index}


def make_sample(wav: np.ndarray, target: np.ndarray, index: int, clip_samples: int | None,
                offset: int = 0) -> dict:
    """Cut ``wav[offset:offset + clip_samples]`` (zero-padded) into a sample dict; no cut if clip_samples is None."""
    wav = np.asarray(wav, dtype=np.float32)
    if clip_samples is not None:
        seg = wav[offset: offset + clip_samples]
        wav = np.pad(seg, (0, clip_samples - len(seg)))
        length = len(seg)
    else:
        length = len(wav)
    return {"wav": torch.from_numpy(np.ascontiguousarray(wav)), "length": length,
            "target": torch.from_numpy(target), "index": index}


def check_files(paths: list[str], max_missing_frac: float = 0.5) -> list[str]:
    """Return the missing paths; raise if more than ``max_missing_frac`` of them are missing.

    Raises:
        ValueError: listing the count and the first 20 missing paths (usually a wrong root or manifest).
    """
    missing = [p for p in paths if not os.path.isfile(p)]
    if paths and len(missing) > max_missing_frac * len(paths):
        head = "\n  ".join(missing[:20])
        raise ValueError(f"{len(missing)} of {len(paths)} audio files are missing (wrong data root or manifest?); "
                         f"first {min(20, len(missing))}:\n  {head}")
    if missing:
        warnings.warn(f"{len(missing)} of {len(paths)} audio files are missing; they will be skipped",
                      stacklevel=3)
    return missing


class AudioDataset(Dataset):
    """Waveforms of a manifest, decoded with soundfile, mixed to mono and resampled to ``sample_rate``.

    Args:
        manifest: files and labels.
        sample_rate: output rate (the front end expects 16 kHz).
        clip_samples: pad/cut every clip to this many samples; None keeps full length (collate pads).
        random_crop: take a random window of ``clip_samples`` from longer clips (else the start); the draw uses
            torch's RNG, which the DataLoader seeds per worker.

    Raises:
        ValueError: more than half the files are missing.
    """

    def __init__(self, manifest: Manifest, sample_rate: int = SAMPLE_RATE, clip_samples: int | None = None,
                 random_crop: bool = False) -> None:
        self.manifest = manifest
        self.sample_rate = sample_rate
        self.clip_samples = clip_samples
        self.random_crop = random_crop
        self.missing = set(check_files(manifest.paths))
        self._targets = manifest.targets()

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, index: int) -> dict:
        path = self.manifest.items[index].path
        try:
            wav = read_audio(path, self.sample_rate)
        except Exception as e:  # any decode failure becomes a skipped sample, reported at epoch end
            return skip_marker(path, f"{type(e).__name__}: {e}".splitlines()[0], index)
        if not np.isfinite(wav).all():
            return skip_marker(path, "non-finite samples", index)
        offset = 0
        if self.random_crop and self.clip_samples is not None and len(wav) > self.clip_samples:
            offset = int(torch.randint(0, len(wav) - self.clip_samples + 1, ()).item())
        return make_sample(wav, self._targets[index], index, self.clip_samples, offset)


def collate(batch: list[dict]) -> dict:
    """Stack usable samples, drop skip markers.

    Returns:
        ``{"wav": (B, S) float32 (zero-padded to the longest), "length": (B,) int64, "target": (B, C),
        "index": (B,) int64, "skipped": list[str]}``; for feature samples ``"spec": (B, 1, T, F)`` replaces
        ``wav``/``length``. B may be 0 when every sample was skipped.
    """
    good = [b for b in batch if "skipped" not in b]
    out: dict = {"skipped": [b["skipped"] for b in batch if "skipped" in b]}
    if not good:
        out.update(wav=torch.zeros(0, 0), length=torch.zeros(0, dtype=torch.long),
                   target=torch.zeros(0, 0), index=torch.zeros(0, dtype=torch.long))
        return out
    if "wav" in good[0]:
        n = max(b["wav"].shape[0] for b in good)
        out["wav"] = torch.stack([torch.nn.functional.pad(b["wav"], (0, n - b["wav"].shape[0])) for b in good])
        out["length"] = torch.tensor([b["length"] for b in good], dtype=torch.long)
    if "spec" in good[0]:
        out["spec"] = torch.stack([b["spec"] for b in good])
    out["target"] = torch.stack([b["target"] for b in good])
    out["index"] = torch.tensor([b["index"] for b in good], dtype=torch.long)
    return out


class SkipCounter:
    """Accumulates ``batch["skipped"]`` over an epoch and formats the report (rank-0 prints it)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.seen = 0

    def update(self, batch: dict) -> None:
        self.counts.update(batch.get("skipped", []))
        self.seen += len(batch.get("index", [])) + len(batch.get("skipped", []))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def report(self, max_paths: int = 20) -> str:
        """One line when nothing was skipped, else the count and up to ``max_paths`` paths."""
        if not self.counts:
            return f"skipped 0 of {self.seen} samples"
        paths = "\n  ".join(sorted(self.counts)[:max_paths])
        more = f"\n  ... and {len(self.counts) - max_paths} more" if len(self.counts) > max_paths else ""
        return (f"skipped {self.total} of {self.seen} samples ({len(self.counts)} files; run "
                f"`python -m audiomosaic data check MANIFEST` for reasons):\n  {paths}{more}")

    def reset(self) -> None:
        self.counts.clear()
        self.seen = 0
