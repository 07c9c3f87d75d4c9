"""Feature cache: features equal the front end's, keys change with parameters and audio, reuse, skip markers."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiomosaic.config import FrontendConfig
from audiomosaic.data import CachedFeatureDataset, FeatureCache, Item, collate, load_manifest
from audiomosaic.data.audio import read_audio
from audiomosaic.frontend import fbank

CFG = FrontendConfig(target_frames=100, num_mel_bins=64)  # 1-s clips give 98 frames: the last 2 are padding


@pytest.fixture()
def manifest(tiny_corpus: Path, tmp_path: Path):
    m = load_manifest(tiny_corpus / "inst11" / "test.json")
    own = [tmp_path / f"{i}.wav" for i in range(4)]
    for i, p in enumerate(own):  # copies we may modify without touching the shared corpus
        sf.write(p, sf.read(m.paths[i * 7])[0], 16000, subtype="PCM_16")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    items = [Item(str(p), m.items[i * 7].labels) for i, p in enumerate(own)] + [Item(str(bad), (0,))]
    return dataclasses.replace(m, items=items)


def test_features_match_the_front_end_and_bad_files_are_skipped(manifest, tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "cache", manifest, CFG).build(batch_size=2)
    feats, ok = cache.open()
    assert feats.dtype == np.float16 and feats.shape == (5, 100, 64)
    assert ok.tolist() == [True] * 4 + [False]
    for i in range(4):
        ref = fbank(read_audio(manifest.paths[i]), 16000, CFG).numpy()
        np.testing.assert_allclose(feats[i].astype(np.float32), ref, atol=1e-2, rtol=1e-3)
    loader = torch.utils.data.DataLoader(CachedFeatureDataset(cache), batch_size=5, collate_fn=collate)
    batch = next(iter(loader))
    assert batch["spec"].shape == (4, 1, 100, 64) and batch["spec"].dtype == torch.float32
    assert batch["skipped"] == [manifest.paths[4]]
    assert torch.equal(batch["target"], torch.from_numpy(manifest.targets()[:4]))


def test_parameter_change_never_reads_stale_features(manifest, tmp_path: Path) -> None:
    a = FeatureCache(tmp_path, manifest, CFG).build()
    other = dataclasses.replace(CFG, norm_mean=0.0)
    b = FeatureCache(tmp_path, manifest, other)
    assert b.key != a.key and not b.complete
    b.build()
    ref = fbank(read_audio(manifest.paths[0]), 16000, other).numpy()
    np.testing.assert_allclose(b.open()[0][0].astype(np.float32), ref, atol=1e-2, rtol=1e-3)
    assert not np.allclose(a.open()[0][0], b.open()[0][0], atol=0.1)
    assert FeatureCache(tmp_path, manifest, CFG, clip_samples=8000).key != a.key


def test_changed_audio_changes_the_key_and_reuse_skips_work(manifest, tmp_path: Path) -> None:
    a = FeatureCache(tmp_path, manifest, CFG).build()
    stamp = a.dir / "meta.json"
    before = stamp.stat().st_mtime_ns
    assert FeatureCache(tmp_path, manifest, CFG).build().dir == a.dir and stamp.stat().st_mtime_ns == before
    path = manifest.paths[1]
    sf.write(path, 0.5 * sf.read(path)[0], 16000, subtype="PCM_16")  # same size, new content and mtime
    os.utime(path, ns=(before + 10**9, before + 10**9))
    assert FeatureCache(tmp_path, manifest, CFG).key != a.key


def test_unbuilt_cache_is_a_value_error(manifest, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not built"):
        CachedFeatureDataset(FeatureCache(tmp_path, manifest, CFG))
