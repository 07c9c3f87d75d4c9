"""Optional precomputed fbank store for probes and fine-tunes: fp16 ``(N, T, F)`` in a memory-mapped ``.npy``.

The store lives in ``<root>/<key>/`` where ``key`` hashes every FrontendConfig field together with the manifest's
file list and each file's size and mtime, so a change of front-end parameters or of the audio can never read
stale features: it simply maps to another folder. A store is complete once ``meta.json`` exists (written last,
after an atomic rename of the folder). Files that fail to decode are flagged in ``ok.npy`` and come back as
skip markers, like :class:`~.dataset.AudioDataset`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from audiomosaic.config import FrontendConfig
from audiomosaic.data.dataset import AudioDataset, collate, skip_marker
from audiomosaic.data.manifest import Manifest
from audiomosaic.frontend import fbank_batch, samples_for_frames

CACHE_VERSION = 1  # bump when the stored layout or the feature computation changes


def cache_key(manifest: Manifest, cfg: FrontendConfig, clip_samples: int) -> str:
    """Hash of the front-end config, the waveform length, the file list and each file's (size, mtime_ns)."""
    files = []
    for p in manifest.paths:
        try:
            st = os.stat(p)
            files.append([p, st.st_size, st.st_mtime_ns])
        except OSError:
            files.append([p, None, None])
    blob = json.dumps({"version": CACHE_VERSION, "frontend": dataclasses.asdict(cfg), "clip_samples": clip_samples,
                       "files": files})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class FeatureCache:
    """fbanks of one manifest under one FrontendConfig.

    Args:
        root: folder holding stores (one sub-folder per key).
        manifest: the files.
        cfg: front-end settings.
        clip_samples: waveforms are cut to this many samples before the fbank (pass the waveform path's
            ``clip_seconds * sample_rate`` to get identical features); default: what fills ``cfg.target_frames``.
    """

    def __init__(self, root: str | os.PathLike, manifest: Manifest, cfg: FrontendConfig = FrontendConfig(),
                 clip_samples: int | None = None) -> None:
        self.manifest, self.cfg = manifest, cfg
        self.clip_samples = clip_samples or samples_for_frames(cfg.target_frames, cfg)
        self.key = cache_key(manifest, cfg, self.clip_samples)
        self.dir = Path(root) / self.key

    @property
    def complete(self) -> bool:
        return (self.dir / "meta.json").is_file()

    def build(self, batch_size: int = 32, num_workers: int = 0, device: str = "cpu", progress: bool = False
              ) -> FeatureCache:
        """Compute and store the features unless a complete store with this key exists; returns self."""
        if self.complete:
            return self
        n, t, f = len(self.manifest), self.cfg.target_frames, self.cfg.num_mel_bins
        tmp = self.dir.with_name(f"{self.key}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        feats = np.lib.format.open_memmap(tmp / "feats.npy", mode="w+", dtype=np.float16, shape=(n, t, f))
        ok = np.zeros(n, dtype=bool)
        ds = AudioDataset(self.manifest, self.cfg.sample_rate, clip_samples=self.clip_samples)
        loader = DataLoader(ds, batch_size=batch_size, num_workers=num_workers, collate_fn=collate)
        for batch in tqdm(loader, desc="fbank cache", disable=not progress):
            if len(batch["index"]) == 0:
                continue
            with torch.no_grad():
                spec = fbank_batch(batch["wav"].to(device), self.cfg, batch["length"].to(device))  # (B, 1, T, F)
            idx = batch["index"].numpy()
            feats[idx] = spec[:, 0].cpu().numpy().astype(np.float16)
            ok[idx] = True
        feats.flush()
        del feats
        np.save(tmp / "ok.npy", ok)
        meta = {"key": self.key, "n": n, "frames": t, "mel_bins": f, "ok": int(ok.sum()),
                "clip_samples": self.clip_samples,
                "frontend": dataclasses.asdict(self.cfg), "manifest": self.manifest.name}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        shutil.rmtree(self.dir, ignore_errors=True)  # an incomplete leftover of an interrupted build
        os.replace(tmp, self.dir)
        return self

    def open(self) -> tuple[np.ndarray, np.ndarray]:
        """(feats (N, T, F) float16 read-only memmap, ok (N,) bool).

        Raises:
            ValueError: the store has not been built.
        """
        if not self.complete:
            raise ValueError(f"feature cache {self.dir} is not built; call FeatureCache(...).build() first")
        return np.load(self.dir / "feats.npy", mmap_mode="r"), np.load(self.dir / "ok.npy")


class CachedFeatureDataset(Dataset):
    """Samples ``{"spec": (1, T, F) float32, "target": (C,), "index": int}`` read from a built store.

    The memmap is opened lazily in each worker (a memmap would be pickled as a full copy otherwise).
    """

    def __init__(self, cache: FeatureCache) -> None:
        if not cache.complete:
            raise ValueError(f"feature cache {cache.dir} is not built; call .build() first")
        self.dir, self.paths = cache.dir, cache.manifest.paths
        self._targets = cache.manifest.targets()
        self._feats: np.ndarray | None = None
        self._ok: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_feats": None, "_ok": None}

    def __getitem__(self, index: int) -> dict:
        if self._feats is None:
            self._feats = np.load(self.dir / "feats.npy", mmap_mode="r")
            self._ok = np.load(self.dir / "ok.npy")
        if not self._ok[index]:
            return skip_marker(self.paths[index], "failed to decode when the cache was built", index)
        spec = torch.from_numpy(np.asarray(self._feats[index], dtype=np.float32))[None]  # (1, T, F)
        return {"spec": spec, "target": torch.from_numpy(self._targets[index]), "index": index}
