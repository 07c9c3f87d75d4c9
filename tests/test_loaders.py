"""Benchmark loaders on miniature copies of each dataset's real layout, AudioDataset, collate and SkipCounter."""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiomosaic.data import AudioDataset, Item, SkipCounter, collate
from audiomosaic.data.manifest import (load_audioset, load_csv, load_esc50, load_folder, load_manifest,
                                       load_speech_commands)


def tone(path: Path, sr: int = 16000, seconds: float = 0.5, channels: int = 1, freq: float = 440.0,
         fmt: str | None = None) -> Path:
    """A real sine recording; stereo files get a different tone per channel."""
    t = np.arange(int(sr * seconds)) / sr
    data = np.stack([0.5 * np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(channels)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data if channels > 1 else data[:, 0], sr, format=fmt)
    return path


def test_audioset_json_multi_label_relative_and_absolute_paths(tmp_path: Path) -> None:
    a = tone(tmp_path / "audio" / "a.wav")
    b = tone(tmp_path / "audio" / "b.flac", sr=44100, channels=2, fmt="FLAC")
    with open(tmp_path / "class_labels_indices.csv", "w", newline="") as f:
        csv.writer(f).writerows([["index", "mid", "display_name"], [0, "/m/09x0r", "Speech"],
                                 [1, "/m/05zppz", "Male speech, man speaking"], [2, "/m/04rlf", "Music"]])
    data = [{"wav": str(a), "labels": "/m/09x0r,/m/05zppz"}, {"wav": "audio/b.flac", "labels": "/m/04rlf"}]
    (tmp_path / "train.json").write_text(json.dumps({"data": data}))
    m = load_audioset(tmp_path / "train.json")
    assert m.multi_label and m.classes[1] == "Male speech, man speaking" and m.mids[2] == "/m/04rlf"
    assert [it.labels for it in m.items] == [(0, 1), (2,)]
    assert m.paths == [str(a), str(b.resolve())]
    np.testing.assert_array_equal(m.targets(), [[1, 1, 0], [0, 0, 1]])
    ds = AudioDataset(m, clip_samples=None)
    wav = ds[1]["wav"]
    assert wav.ndim == 1 and abs(wav.shape[0] - 8000) <= 1  # 0.5 s at 44.1 kHz stereo -> 16 kHz mono
    data.append({"wav": "audio/a.wav", "labels": "/m/unknown"})
    (tmp_path / "bad.json").write_text(json.dumps({"data": data}))
    with pytest.raises(ValueError, match="/m/unknown"):
        load_audioset(tmp_path / "bad.json", tmp_path / "class_labels_indices.csv")


def test_esc50_folds(tmp_path: Path) -> None:
    rows = [["filename", "fold", "target", "category", "esc10", "src_file", "take"]]
    for fold in range(1, 6):
        for target, cat in ((0, "dog"), (1, "rooster")):
            name = f"{fold}-{100 + target}-A-{target}.wav"
            tone(tmp_path / "audio" / name, sr=44100, seconds=0.2, freq=300 + 100 * fold)
            rows.append([name, fold, target, cat, "True", str(100 + target), "A"])
    (tmp_path / "meta").mkdir()
    with open(tmp_path / "meta" / "esc50.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    test = load_esc50(tmp_path, fold=2, split="test")
    train = load_manifest(tmp_path, fold=2, split="train")
    assert test.classes == ["dog", "rooster"] and not test.multi_label
    assert len(test) == 2 and all(Path(p).name.startswith("2-") for p in test.paths)
    assert len(train) == 8 and not set(train.paths) & set(test.paths)
    assert sorted(it.labels for it in test.items) == [(0,), (1,)]
    with pytest.raises(ValueError, match="fold must be 1-5"):
        load_esc50(tmp_path, fold=6)


def _speech_commands(root: Path, words: tuple[str, ...]) -> None:
    for i, word in enumerate(words):
        for spk in ("0a7c2a8d", "1b4c9b89", "2c5d0e12"):
            tone(root / word / f"{spk}_nohash_0.wav", seconds=0.1, freq=200 + 50 * i)
    tone(root / "_background_noise_" / "white_noise.wav", seconds=0.3)
    (root / "validation_list.txt").write_text("".join(f"{w}/1b4c9b89_nohash_0.wav\n" for w in words))
    (root / "testing_list.txt").write_text("".join(f"{w}/2c5d0e12_nohash_0.wav\n" for w in words))


def test_speech_commands_v1_maps_other_words_to_unknown(tmp_path: Path) -> None:
    _speech_commands(tmp_path, ("yes", "no", "bed", "marvin"))
    train = load_speech_commands(tmp_path, version=1, split="train")
    test = load_manifest(tmp_path, version=1, split="test")
    assert train.num_classes == 11 and train.classes[-1] == "_unknown_"
    assert len(train) == len(test) == 4
    assert all(Path(p).name.startswith("0a7c2a8d") for p in train.paths)
    assert all(Path(p).name.startswith("2c5d0e12") for p in test.paths)
    labels = {Path(p).parent.name: it.labels for p, it in zip(train.paths, train.items)}
    assert labels == {"yes": (0,), "no": (1,), "bed": (10,), "marvin": (10,)}
    assert not any("_background_noise_" in p for p in train.paths)
    assert {it.group for it in train.items} == {"0a7c2a8d"}


def test_speech_commands_v2_has_35_classes(tmp_path: Path) -> None:
    _speech_commands(tmp_path, ("bed", "zero"))
    valid = load_speech_commands(tmp_path, version=2, split="valid")
    assert valid.num_classes == 35 and len(valid) == 2
    assert sorted(valid.classes[i] for it in valid.items for i in it.labels) == ["bed", "zero"]
    tone(tmp_path / "notaword" / "x_nohash_0.wav")
    with pytest.raises(ValueError, match="notaword"):
        load_speech_commands(tmp_path, version=2)


def test_class_folders_with_flac_and_ogg(tmp_path: Path) -> None:
    tone(tmp_path / "cat" / "a.flac", sr=22050, fmt="FLAC")
    tone(tmp_path / "dog" / "sub" / "b.ogg", sr=48000, fmt="OGG")
    (tmp_path / "dog" / "notes.txt").write_text("not audio")
    m = load_folder(tmp_path)
    assert m.classes == ["cat", "dog"] and [it.labels for it in m.items] == [(0,), (1,)]
    batch = collate([AudioDataset(m, clip_samples=4000)[i] for i in range(2)])
    assert batch["wav"].shape == (2, 4000) and batch["length"].tolist() == [4000, 4000]


def test_csv_with_semicolon_and_comma_labels(tmp_path: Path) -> None:
    tone(tmp_path / "x.wav")
    tone(tmp_path / "y.wav", freq=880)
    (tmp_path / "list.csv").write_text('filename,labels\nx.wav,"rain;thunder"\ny.wav,"rain, wind"\n')
    m = load_csv(tmp_path / "list.csv")
    assert m.classes == ["rain", "thunder", "wind"] and m.multi_label
    assert [it.labels for it in m.items] == [(0, 1), (0, 2)]
    assert m.paths == [str((tmp_path / "x.wav").resolve()), str((tmp_path / "y.wav").resolve())]


def test_dataloader_spawn_workers_drop_corrupt_files(tiny_corpus: Path, tmp_path: Path) -> None:
    m = load_manifest(tiny_corpus / "kws10" / "test.json")
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + os.urandom(64))
    m = dataclasses.replace(m, items=[*m.items[:3], Item(str(bad), (0,)), *m.items[3:7]])
    ds = AudioDataset(m, clip_samples=16000)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=1, collate_fn=collate,
                                         multiprocessing_context="spawn")
    counter = SkipCounter()
    indices = []
    for batch in loader:
        counter.update(batch)
        assert batch["wav"].shape == (len(batch["index"]), 16000) and batch["target"].shape[1] == 10
        assert torch.equal(batch["target"], torch.from_numpy(m.targets()[batch["index"].numpy()]))
        indices += batch["index"].tolist()
    assert indices == [0, 1, 2, 4, 5, 6, 7] and counter.total == 1
    assert str(bad) in counter.report() and counter.report().startswith("skipped 1 of 8")


def test_missing_files_warn_then_fail(tmp_path: Path) -> None:
    present = [tone(tmp_path / f"{i}.wav") for i in range(3)]
    items = [f"{{\"wav\": \"{p.name}\", \"labels\": \"\"}}" for p in present]
    items += [f"{{\"wav\": \"gone{i}.wav\", \"labels\": \"\"}}" for i in range(2)]
    (tmp_path / "m.json").write_text('{"data": [' + ",".join(items) + "]}")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ds = AudioDataset(load_manifest(tmp_path / "m.json"))
    assert "2 of 5" in str(w[0].message) and "skipped" in ds[3]
    items += [f"{{\"wav\": \"gone{i}.wav\", \"labels\": \"\"}}" for i in range(2, 4)]
    (tmp_path / "m.json").write_text('{"data": [' + ",".join(items) + "]}")
    with pytest.raises(ValueError, match=r"4 of 7 audio files are missing") as e:
        AudioDataset(load_manifest(tmp_path / "m.json"))
    assert "gone3.wav" in str(e.value)
