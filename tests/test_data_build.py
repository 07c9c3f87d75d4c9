"""Corpus builder: layout, leakage rules, determinism, reuse, apt fallback, effects and on-the-fly datasets."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiomosaic.data import build, collate, load_manifest
from audiomosaic.data.apt_sources import (DrumsTask, SourceUnavailable, SpeakerTask, drum_class, fetch_package,
                                          phrase_stem)
from audiomosaic.data.audio import reverb_and_noise
from audiomosaic.data.corpus import _plan, leakage_report
from audiomosaic.data.onthefly import OnTheFlyNotes, OnTheFlySpeech, load_onthefly
from audiomosaic.data.recipes import SC_V2_WORDS, SpeechTask, recipes, split_groups

TASKS = ("kws10", "inst11")


def _metadata(root: Path) -> list[dict]:
    with open(root / "metadata.csv", newline="") as f:
        return list(csv.DictReader(f))


def _manifest_files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*.json"))
            if p.name != "build_info.json"} | {"metadata.csv": (root / "metadata.csv").read_text()}


def test_tiny_layout_and_format(tiny_corpus: Path) -> None:
    info = json.loads((tiny_corpus / "build_info.json").read_text())
    assert info["recipe"] == "tiny" and set(info["tasks"]) == set(TASKS)
    for task in TASKS:
        with open(tiny_corpus / task / "class_labels_indices.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert [int(r["index"]) for r in rows] == list(range(len(rows)))
        mids = {r["mid"] for r in rows}
        for split in ("train", "test"):
            entries = json.loads((tiny_corpus / task / f"{split}.json").read_text())["data"]
            assert len(entries) == info["tasks"][task][split] > 0
            for e in entries:
                assert not os.path.isabs(e["wav"]) and e["wav"].startswith(f"{split}/{e['labels']}/")
                assert e["labels"] in mids
    wavs = sorted(tiny_corpus.rglob("*.wav"))
    assert len(wavs) == info["clips"] == len(_metadata(tiny_corpus))
    for w in wavs[::25]:
        i = sf.info(w)
        assert (i.samplerate, i.channels, i.subtype) == (16000, 1, "PCM_16")
        data, _ = sf.read(w)
        assert np.abs(data).max() > 0.01  # silent renders are dropped, never written


def test_no_leakage_and_every_class_in_both_splits(tiny_corpus: Path) -> None:
    rows = _metadata(tiny_corpus)
    pool = {e["wav"] for e in json.loads((tiny_corpus / "pretrain.json").read_text())["data"]}
    test_files = {r["file"] for r in rows if r["split"] == "test"}
    assert pool and not pool & test_files
    assert pool == {r["file"] for r in rows if r["split"] == "train"}
    sides = defaultdict(set)
    for r in rows:
        sides[(r["task"], r["group"])].add(r["split"])
    assert all(len(s) == 1 for s in sides.values()), "a group straddles train and test"
    for task in TASKS:
        classes = {r["label"] for r in rows if r["task"] == task}
        for split in ("train", "test"):
            assert {r["label"] for r in rows if r["task"] == task and r["split"] == split} == classes


def test_build_records_a_zero_leakage_report_that_catches_a_leak(tiny_corpus: Path, tmp_path: Path) -> None:
    info = json.loads((tiny_corpus / "build_info.json").read_text())
    assert info["leakage"] == {"test_in_pretrain": 0, "test_in_train_manifests": 0, "groups_in_both_splits": 0,
                               "missing_from_metadata": 0}
    # a copy of the manifests with one test file moved into the pool and one train manifest: both are counted
    for name in ("metadata.csv", "pretrain.json"):
        (tmp_path / name).write_bytes((tiny_corpus / name).read_bytes())
    (tmp_path / "kws10").mkdir()
    rows = _metadata(tiny_corpus)
    test_file = next(r["file"] for r in rows if r["split"] == "test" and r["task"] == "kws10")
    pool = json.loads((tmp_path / "pretrain.json").read_text())
    pool["data"].append({"wav": test_file, "labels": ""})
    (tmp_path / "pretrain.json").write_text(json.dumps(pool))
    train = json.loads((tiny_corpus / "kws10" / "train.json").read_text())
    train["data"].append({"wav": test_file.split("/", 1)[1], "labels": "yes"})
    (tmp_path / "kws10" / "train.json").write_text(json.dumps(train))
    leaks = leakage_report(tmp_path)
    assert leaks["test_in_pretrain"] == 1 and leaks["test_in_train_manifests"] == 1


def test_same_seed_same_manifests_via_cli(tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "again"
    res = subprocess.run([sys.executable, "-m", "audiomosaic.cli.data", "build", "--recipe", "tiny", "--out", str(out),
                          "--seed", "0", "--no-progress", "--workers", "2"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "built tiny corpus" in res.stdout
    assert _manifest_files(out) == _manifest_files(tiny_corpus)


def test_other_seed_other_voices() -> None:
    a = recipes()["tiny"][0].plan(0, Path("."))
    b = recipes()["tiny"][0].plan(1, Path("."))
    assert {c.group for c in a.clips} != {c.group for c in b.clips}


def test_complete_build_is_reused(tiny_corpus: Path) -> None:
    # reused = nothing rewritten (every file keeps its modification time), not "fast": no wall-clock asserts
    before = {p: p.stat().st_mtime_ns for p in tiny_corpus.rglob("*") if p.is_file()}
    assert build("tiny", tiny_corpus, seed=0, progress=False) == tiny_corpus
    assert {p: p.stat().st_mtime_ns for p in tiny_corpus.rglob("*") if p.is_file()} == before


def test_unknown_recipe_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="allowed: tiny, default, large"):
        build("huge", tmp_path)


def test_split_groups_single_label_groups_are_stratified() -> None:
    labels = [f"fam{g // 4}" for g in range(12) for _ in range(5)]  # 3 labels x 4 groups x 5 items
    groups = [f"g{g}" for g in range(12) for _ in range(5)]
    split = split_groups(labels, groups, 0.25, np.random.default_rng(0))
    for fam in range(3):
        sides = [split[f"g{g}"] for g in range(4 * fam, 4 * fam + 4)]
        assert sides.count("test") == 1 and sides.count("train") == 3
    with pytest.raises(ValueError, match="single group"):
        split_groups(["a", "b", "b"], ["g0", "g1", "g2"], 0.5, np.random.default_rng(0))


def test_label_rules() -> None:
    assert [phrase_stem(s) for s in ("Ow1", "Ow4", "Firepunch6", "Uh-oh", "Hello")] == \
        ["ow", "ow", "firepunch", "uhoh", "hello"]
    names = ["Kick Lite 1", "Djembe1 Bass", "Closed HH", "Ride Bell", "Tom Low", "Pearl Side Stick", "Hand Clap",
             "c3 - bass drum 1", "Zap 1"]
    assert [drum_class(n) for n in names] == ["kick", "hand_perc", "hihat", "cymbal", "tom", "snare", "clap",
                                             "kick", None]


def test_apt_sources_skip_with_one_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no apt-get, dpkg-deb or tar on PATH
    with pytest.raises(SourceUnavailable, match="not found"):
        fetch_package("hydrogen-drumkits", ("*.wav",), tmp_path)
    plans, specs, skipped = _plan((DrumsTask(), SpeakerTask()), 0, tmp_path)
    assert plans == [] and set(skipped) == {"drums7", "speaker15"}
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("note: skipping drums7, speaker15")


def test_reverb_and_noise_hits_the_requested_snr() -> None:
    rng = np.random.default_rng(0)
    clean = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000).astype(np.float32)
    noisy = reverb_and_noise(clean, np.random.default_rng(1), None, (10.0, 10.0))
    snr = 10 * np.log10(np.mean(clean ** 2) / np.mean((noisy - clean) ** 2))
    assert abs(snr - 10.0) < 1e-3
    wet = reverb_and_noise(clean, rng, (0.5, 0.5), None)
    assert wet.shape == clean.shape and np.isfinite(wet).all() and not np.allclose(wet, clean)


def test_large_recipe_plans_every_voice_with_held_out_variants() -> None:
    kws = next(t for t in recipes()["large"] if isinstance(t, SpeechTask))
    plan = kws.plan(0, Path("."))
    voices = {c.name.rsplit("_", 1)[0] for c in plan.clips}
    assert len(plan.clips) == len(voices) * kws.draws * len(SC_V2_WORDS) and len(voices) > 800
    sides = defaultdict(set)
    for c in plan.clips:
        sides[c.group].add(c.split)
    assert all(len(s) == 1 for s in sides.values())


def test_onthefly_notes_render_family_targets(tmp_path: Path) -> None:
    spec = OnTheFlyNotes().write(tmp_path / "notes.json", seed=0)
    train, test = load_onthefly(spec, "train"), load_onthefly(spec, "test")
    assert len(train) > 10_000 and len(test) > 1_000
    assert not set(train.grid[:, 1].tolist()) & set(test.grid[:, 1].tolist())  # programs held out
    sample = train[len(train) // 2]
    assert sample["wav"].shape == (64000,) and torch.isfinite(sample["wav"]).all()
    assert sample["target"].sum() == 1 and sample["wav"].abs().max() > 0.01


def test_onthefly_speech_renders_in_dataloader_workers(tmp_path: Path) -> None:
    spec = OnTheFlySpeech().write(tmp_path / "speech.json", seed=0)
    ds = load_onthefly(spec, "test", n_items=6)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert [b["wav"].shape for b in batches] == [(3, 16000)] * 2
    targets = torch.cat([b["target"] for b in batches]).argmax(1)
    assert targets.tolist() == list(range(6))  # item i says word i mod 35
    assert torch.equal(ds[4]["wav"], batches[1]["wav"][1])  # same index, same audio in the main process


def test_loader_reads_built_task(tiny_corpus: Path) -> None:
    m = load_manifest(tiny_corpus / "kws10" / "test.json")
    assert m.num_classes == 10 and not m.multi_label and all(os.path.isfile(p) for p in m.paths)
