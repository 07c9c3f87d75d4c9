"""Loaders for the benchmarks a user brings, all returning one :class:`Manifest`.

- AudioSet and built corpora: the authors' JSON ``{"data": [{"wav", "labels": "mid,mid"}]}`` plus
  ``class_labels_indices.csv`` (``index,mid,display_name``); relative ``wav`` paths are resolved against the
  JSON's folder, absolute ones are kept.
- ESC-50: ``meta/esc50.csv`` + ``audio/``; test fold k, train = the other four folds.
- Speech Commands v1 (10 words + ``_unknown_``, no silence class; docs/method.md §8) and v2 (35 words): word folders plus
  ``validation_list.txt`` / ``testing_list.txt``; ``_background_noise_`` is excluded.
- Any folder of class folders, and any CSV of (path, labels) with ``;`` or ``,`` separated labels.

Items hold absolute paths; decoding (soundfile -> mono -> 16 kHz) happens in :mod:`.dataset`.
"""
from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from audiomosaic.data.recipes import SC_V1_WORDS, SC_V2_WORDS

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3")
UNKNOWN = "_unknown_"


@dataclass(frozen=True)
class Item:
    path: str  # absolute
    labels: tuple[int, ...]  # class indices (empty for unlabelled pools)
    group: str = ""  # leakage group when known (speaker, source recording)


@dataclass(frozen=True)
class Manifest:
    """A labelled (or unlabelled) list of audio files."""

    items: list[Item]
    classes: list[str]  # display names, in class-index order
    mids: list[str]  # machine ids (AudioSet /m/...; folder names elsewhere), same order
    multi_label: bool
    name: str

    def __len__(self) -> int:
        return len(self.items)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def paths(self) -> list[str]:
        return [it.path for it in self.items]

    def targets(self) -> np.ndarray:
        """(N, C) float32 multi-hot matrix."""
        out = np.zeros((len(self.items), self.num_classes), dtype=np.float32)
        for i, it in enumerate(self.items):
            out[i, list(it.labels)] = 1.0
        return out

    def subset(self, indices: list[int], name: str | None = None) -> Manifest:
        return replace(self, items=[self.items[i] for i in indices], name=name or self.name)


def _resolve(path: str, base: Path) -> str:
    return path if os.path.isabs(path) else str((base / path).resolve())


def read_class_csv(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """``class_labels_indices.csv`` -> (mids, display names) in index order."""
    with open(path, newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: int(r["index"]))
    return [r["mid"] for r in rows], [r["display_name"] for r in rows]


def load_audioset(json_path: str | os.PathLike, labels_csv: str | os.PathLike | None = None,
                  multi_label: bool | None = None, name: str | None = None) -> Manifest:
    """The authors' JSON manifest (AudioSet, or any built task / ``pretrain.json``).

    Args:
        json_path: ``{"data": [{"wav": path, "labels": "mid1,mid2"}, ...]}``.
        labels_csv: class list; default ``class_labels_indices.csv`` beside the JSON (absent: unlabelled).
        multi_label: default: True if any item has more than one label.

    Raises:
        ValueError: a label that is not in the class list, or a malformed file.
    """
    json_path = Path(json_path)
    try:
        entries = json.loads(json_path.read_text())["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{json_path}: not a manifest of the form {{'data': [{{'wav', 'labels'}}]}} ({e})") from None
    csv_path = Path(labels_csv) if labels_csv else json_path.parent / "class_labels_indices.csv"
    mids, names = read_class_csv(csv_path) if csv_path.is_file() else ([], [])
    index = {m: i for i, m in enumerate(mids)}
    items = []
    for e in entries:
        labs = [m for m in str(e.get("labels", "")).split(",") if m]
        unknown = [m for m in labs if m not in index]
        if unknown:
            raise ValueError(f"{json_path}: label(s) {unknown} of {e['wav']} are not in {csv_path}")
        items.append(Item(_resolve(e["wav"], json_path.parent), tuple(index[m] for m in labs),
                          str(e.get("group", ""))))
    if multi_label is None:
        multi_label = any(len(it.labels) > 1 for it in items)
    return Manifest(items, names, mids, multi_label, name or f"{json_path.parent.name}/{json_path.stem}")


def load_esc50(root: str | os.PathLike, fold: int = 1, split: str = "test") -> Manifest:
    """ESC-50 (``<root>/meta/esc50.csv``, ``<root>/audio/*.wav``): ``split='test'`` is fold ``fold``,
    ``'train'`` the other folds. Classes are the 50 categories in target order; group = source recording."""
    if fold not in range(1, 6) or split not in ("train", "test"):
        raise ValueError(f"ESC-50 fold must be 1-5 and split train/test, got fold={fold}, split={split!r}")
    root = Path(root)
    with open(root / "meta" / "esc50.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    categories = {int(r["target"]): r["category"] for r in rows}
    classes = [categories[t] for t in sorted(categories)]
    keep = [r for r in rows if (int(r["fold"]) == fold) == (split == "test")]
    items = [Item(str((root / "audio" / r["filename"]).resolve()), (classes.index(r["category"]),), r["src_file"])
             for r in keep]
    return Manifest(items, classes, list(classes), False, f"esc50_fold{fold}_{split}")


def load_speech_commands(root: str | os.PathLike, version: int = 2, split: str = "train") -> Manifest:
    """Google Speech Commands. v1: 11 classes (10 words + ``_unknown_`` for the other words, no silence);
    v2: the 35 words. Splits come from ``validation_list.txt`` (``valid``) / ``testing_list.txt`` (``test``);
    ``train`` is every other clip. Group = speaker hash (the file name before ``_nohash_``).

    Raises:
        ValueError: bad version/split, or (v2) a word folder outside the 35 words.
    """
    if version not in (1, 2) or split not in ("train", "valid", "test"):
        raise ValueError(f"version must be 1 or 2 and split train/valid/test, got {version}, {split!r}")
    root = Path(root)
    listed = {s: _read_list(root / f"{s}_list.txt") for s in ("validation", "testing")}
    classes = [*SC_V1_WORDS, UNKNOWN] if version == 1 else list(SC_V2_WORDS)
    words = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("_"))
    if version == 2 and set(words) - set(classes):
        raise ValueError(f"{root}: folders {sorted(set(words) - set(classes))} are not Speech Commands v2 words")
    items = []
    for word in words:
        cls = classes.index(word) if word in classes else classes.index(UNKNOWN)
        for f in sorted((root / word).glob("*.wav")):
            rel = f"{word}/{f.name}"
            where = "valid" if rel in listed["validation"] else "test" if rel in listed["testing"] else "train"
            if where == split:
                items.append(Item(str(f.resolve()), (cls,), f.name.split("_nohash_")[0]))
    return Manifest(items, classes, list(classes), False, f"speechcommands_v{version}_{split}")


def _read_list(path: Path) -> set[str]:
    return {ln.strip() for ln in path.read_text().splitlines() if ln.strip()} if path.is_file() else set()


def load_folder(root: str | os.PathLike, name: str | None = None) -> Manifest:
    """``<root>/<class>/**/<file>`` for audio extensions; classes are the sorted folder names."""
    root = Path(root)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith((".", "_")))
    items = [Item(str(f.resolve()), (i,)) for i, c in enumerate(classes)
             for f in sorted((root / c).rglob("*")) if f.suffix.lower() in AUDIO_EXTENSIONS]
    if not items:
        raise ValueError(f"{root}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in class sub-folders")
    return Manifest(items, classes, list(classes), False, name or root.name)


_PATH_COLUMNS = ("path", "wav", "file", "filename", "audio")
_LABEL_COLUMNS = ("labels", "label", "class", "category", "target")


def load_csv(csv_path: str | os.PathLike, root: str | os.PathLike | None = None, name: str | None = None
             ) -> Manifest:
    """A CSV with a header, a path column (``path``/``wav``/``file``/``filename``/``audio``, else the first)
    and a label column (``labels``/``label``/``class``/``category``/``target``, else the second); labels
    separated by ``;`` or ``,``. Relative paths resolve against ``root`` (default: the CSV's folder)."""
    csv_path = Path(csv_path)
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2 or len(rows[0]) < 2:
        raise ValueError(f"{csv_path}: expected a header and rows of (path, labels)")
    header = [h.strip().lower() for h in rows[0]]
    pcol = next((header.index(c) for c in _PATH_COLUMNS if c in header), 0)
    lcol = next((header.index(c) for c in _LABEL_COLUMNS if c in header), 1 if pcol != 1 else 0)
    base = Path(root) if root else csv_path.parent
    parsed = [(r[pcol], [s.strip() for s in re.split(r"[;,]", r[lcol]) if s.strip()]) for r in rows[1:] if r]
    classes = sorted({lab for _, labs in parsed for lab in labs})
    items = [Item(_resolve(p, base), tuple(sorted(classes.index(x) for x in labs))) for p, labs in parsed]
    return Manifest(items, classes, list(classes), any(len(it.labels) > 1 for it in items), name or csv_path.stem)


def load_manifest(path: str | os.PathLike, **kwargs) -> Manifest:
    """Dispatch on what ``path`` is: ``.json`` (authors' layout), ``.csv``, an ESC-50 root, a Speech Commands
    root or a folder of class folders. Keyword arguments go to the chosen loader."""
    p = Path(path)
    if p.suffix == ".json":
        return load_audioset(p, **kwargs)
    if p.suffix == ".csv":
        return load_csv(p, **kwargs)
    if not p.is_dir():
        raise ValueError(f"{p}: expected a .json/.csv manifest or a dataset folder")
    if (p / "meta" / "esc50.csv").is_file():
        return load_esc50(p, **kwargs)
    if (p / "testing_list.txt").is_file():
        return load_speech_commands(p, **kwargs)
    return load_folder(p, **kwargs)
