"""The offline spoof recipe: built from the ``tiny`` corpus (real audio files), leakage, matching, inheritance."""
import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiomosaic.data import build
from audiomosaic.data.corpus import is_built, leakage_report
from audiomosaic.data.manifest import load_audioset
from audiomosaic.data.spoof import SETS, SOURCE_TASKS, TEST_SETS, TRACKS


@pytest.fixture(scope="module")
def spoof(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("spoof", tmp_path_factory.mktemp("spoof"), source="tiny", source_dir=tiny_corpus, progress=False,
                 workers=2)


def _meta(root: Path) -> dict[str, dict[str, str]]:
    with open(root / "metadata.csv", newline="") as f:
        return {r["file"]: r for r in csv.DictReader(f)}


def _entries(root: Path, track: str, name: str) -> list[dict]:
    data = json.loads((root / track / f"{name}.json").read_text())["data"]
    return [dict(e, file=os.path.normpath(f"{track}/{e['wav']}")) for e in data]


def test_zero_leakage_and_a_complete_build(spoof: Path):
    info = json.loads((spoof / "build_info.json").read_text())
    assert info["leakage"] == {"test_in_pretrain": 0, "test_in_train_manifests": 0, "groups_in_both_splits": 0,
                               "missing_from_metadata": 0, "fakes_in_pretrain": 0}
    assert is_built(spoof, "spoof", 0, "tiny") and not is_built(spoof, "spoof", 0, "default")
    for track in TRACKS:
        for name in SETS:
            c = info["counts"][track][name]
            assert c["bonafide"] > 0 and c["spoof"] == c["bonafide"], (track, name, c)
        assert set(info["trivial_cue"][track]) == set(TEST_SETS)
        assert all(0.0 <= v <= 1.0 for v in info["trivial_cue"][track].values())
    # The manifests load through the kit's AudioSet loader: two classes, spoof = 0, bona fide = 1.
    m = load_audioset(spoof / "ata" / "test01.json")
    assert m.mids == ["spoof", "bonafide"] and len(m) == 2 * info["counts"]["ata"]["test01"]["bonafide"]
    assert all(Path(p).is_file() for p in m.paths)


def test_an_injected_leak_is_caught(spoof: Path, tmp_path: Path):
    for name in ("metadata.csv", "pretrain.json"):
        (tmp_path / name).write_bytes((spoof / name).read_bytes())
    meta = _meta(spoof)
    fake = next(f for f, r in meta.items() if r["generator"] != "bonafide" and r["split"] == "train")
    test_real = next(f for f, r in meta.items() if r["generator"] == "bonafide" and r["split"] == "test")
    pool = json.loads((tmp_path / "pretrain.json").read_text())
    pool["data"].append({"wav": fake, "labels": ""})
    (tmp_path / "pretrain.json").write_text(json.dumps(pool))
    (tmp_path / "ata").mkdir()
    train = json.loads((spoof / "ata" / "train.json").read_text())
    train["data"].append({"wav": os.path.relpath(test_real, "ata"), "labels": "bonafide"})
    (tmp_path / "ata" / "train.json").write_text(json.dumps(train))
    leaks = leakage_report(tmp_path)
    assert leaks["fakes_in_pretrain"] == 1 and leaks["test_in_train_manifests"] == 1


def test_fakes_are_length_level_and_format_matched(spoof: Path):
    meta = _meta(spoof)
    fakes = [r for r in meta.values() if r["generator"] != "bonafide"]
    assert {r["generator"] for r in fakes} >= {"griffinlim_mel", "phase_vocoder", "tta_a", "tta_b"}
    for r in fakes[::3]:
        real_path = spoof / "bonafide" / r["source_file"]
        fi, ri = sf.info(str(spoof / r["file"])), sf.info(str(real_path))
        assert (fi.samplerate, fi.subtype, fi.frames) == (16000, "PCM_16", ri.frames), r["file"]
        fake, real = sf.read(str(spoof / r["file"]))[0], sf.read(str(real_path))[0]
        db = 20 * np.log10(np.sqrt(np.mean(fake ** 2)) / np.sqrt(np.mean(real ** 2)))
        assert abs(db) < 0.5, (r["file"], db)


def test_fakes_inherit_their_source_split_and_group(spoof: Path):
    meta = _meta(spoof)
    seen_tasks, unseen_tasks = SOURCE_TASKS["tiny"]
    for r in meta.values():
        if r["generator"] != "bonafide":
            src = meta[f"bonafide/{r['source_file']}"]
            assert (r["task"], r["group"], r["split"], r["source_label"]) == \
                (src["task"], src["group"], src["split"], src["source_label"])
    for track, (g_seen, g_unseen) in TRACKS.items():
        for name in SETS:
            entries = _entries(spoof, track, name)
            splits = {meta[e["file"]]["split"] for e in entries}
            assert splits == ({name} if name in ("train", "dev") else {"test"}), (track, name, splits)
            gens = {e["generator"] for e in entries} - {"bonafide"}
            seen_gen, seen_src = TEST_SETS.get(name, (True, True))
            assert gens <= set(g_seen if seen_gen else g_unseen), (track, name, gens)
            assert {e["task"] for e in entries} <= set(seen_tasks if seen_src else unseen_tasks)
    # Train and dev hold disjoint groups; only bona fide train clips are in the pre-training pool.
    groups = {n: {(e["task"], e["group"]) for e in _entries(spoof, "ata", n)} for n in ("train", "dev")}
    assert groups["train"] and groups["dev"] and not groups["train"] & groups["dev"]
    pool = [e["wav"] for e in json.loads((spoof / "pretrain.json").read_text())["data"]]
    assert pool and all(meta[w]["generator"] == "bonafide" and meta[w]["split"] == "train" for w in pool)


def test_unknown_source_is_an_error(tmp_path: Path):
    with pytest.raises(ValueError, match="spoof source"):
        build("spoof", tmp_path, source="nope")


def test_cli_reuses_a_complete_build(spoof: Path, tiny_corpus: Path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "audiomosaic", "data", "build", "--recipe", "spoof", "--source", "tiny",
                        "--source-dir", str(tiny_corpus), "--out", str(spoof), "--no-progress"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("reused spoof corpus (from tiny)") and "trivial-cue EER" in r.stdout
