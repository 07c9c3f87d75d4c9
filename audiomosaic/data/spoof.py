"""The offline spoof-detection corpus (``data build --recipe spoof``): an EnvSDD-like task from the kit's corpora.

Bona fide clips are files of a built source corpus (``default``; ``tiny`` for tests); fakes come from the offline
generators of :mod:`.fakes`. Two tracks as EnvSDD: ``ata`` (audio-to-audio: resynthesis and codecs) and ``tta``
(label-to-audio). Generators and source tasks are each split into seen and unseen (docs/method.md §8):

============  ==============  =============================================
set           generators      source clips
============  ==============  =============================================
train / dev   seen            seen tasks, source train split (dev: held-out groups)
test01        seen            seen tasks, source test split
test02        seen            unseen tasks, source test split
test03        unseen          seen tasks, source test split
test04        unseen          unseen tasks, source test split
============  ==============  =============================================

Every fake inherits its source clip's task, group and split, so a leakage group never spans two splits; only bona
fide train clips enter ``pretrain.json``. Test clips come from the source corpus' test split, which never entered
its pre-training pool. Layout of ``<out>``: ``bonafide/<source path>``, ``<track>/<generator>/<source path>``,
``<track>/{train,dev,test01..04}.json`` (the AudioSet JSON with ``labels`` ``bonafide``/``spoof`` plus
``generator``, ``task`` and ``group`` fields; paths relative to the track folder),
``<track>/class_labels_indices.csv`` (0 spoof, 1 bonafide: AASIST's order, so the class weights [0.1, 0.9] favour
the bona fide class and EER/AUC take class 1 as positive), ``metadata.csv``, ``pretrain.json``,
``build_info.json`` (counts, cost, leakage counts and the trivial-cue baseline's EERs).
"""
from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audiomosaic.config import FrontendConfig
from audiomosaic.data import audio, fakes
from audiomosaic.data.recipes import stable_hash, task_rng
from audiomosaic.frontend import fbank, num_frames
from audiomosaic.metrics import eer_roc

SPOOF_VERSION = 1
SOURCE_TASKS = {"default": (("kws35", "inst11"), ("drums7", "speaker15")),  # (seen, unseen) source tasks
                "tiny": (("kws10",), ("inst11",))}
TRACKS = {"ata": (("griffinlim_mel", "phase_vocoder", "mp3"), ("griffinlim_linear", "vorbis", "opus")),
          "tta": (("tta_a",), ("tta_b",))}  # (seen, unseen) generators
TEST_SETS = {"test01": (True, True), "test02": (True, False), "test03": (False, True), "test04": (False, False)}
SETS = ("train", "dev", *TEST_SETS)
CLASSES = ("spoof", "bonafide")


@dataclass(frozen=True)
class SpoofRecipe:
    """How much of the source corpus to use (caps keep a CPU fine-tune short)."""

    source: str = "default"
    max_train: int = 300  # bona fide clips per seen task drawn from its source train split (train + dev)
    max_test: int = 100  # bona fide clips per task drawn from its source test split
    dev_frac: float = 0.2  # fraction of the drawn train groups held out as dev


@dataclass(frozen=True)
class Job:
    """One file to write: a bona fide copy (``generator`` = "bonafide") or a fake of ``src``."""

    src: str
    dst: str
    generator: str
    task: str
    label: str
    seed: int


def _run_job(job: Job) -> float:
    """Write one file; returns the fake/real RMS ratio in dB (0 for bona fide)."""
    wav = audio.read_audio_np(job.src) * fakes.HEADROOM
    if job.generator == "bonafide":
        audio.write_wav(job.dst, wav)
        return 0.0
    raw = fakes.generate(wav, job.generator, job.task, job.label, job.seed)
    out = fakes.match(raw, wav, align_onset=job.generator in fakes.TTA_GENERATORS)
    audio.write_wav(job.dst, out)
    return 20 * float(np.log10(np.sqrt(np.mean(out ** 2)) / max(np.sqrt(np.mean(wav ** 2)), 1e-9) + 1e-12))


def _read_metadata(source_dir: Path) -> list[dict[str, str]]:
    with open(source_dir / "metadata.csv", newline="") as f:
        return list(csv.DictReader(f))


def plan(rows: list[dict[str, str]], recipe: SpoofRecipe, seed: int) -> list[dict[str, str]]:
    """Bona fide rows of the spoof corpus: source rows with their spoof ``split`` (train/dev/test) and ``seen``."""
    seen, unseen = SOURCE_TASKS[recipe.source]
    reserved = {v for voices in fakes.TTA_VOICES.values() for v in voices}
    out = []
    for task in (*seen, *unseen):
        rng = task_rng(seed, "spoof", task)
        # Speech groups are espeak voice variants: the generators' voices are never bona fide.
        mine = [r for r in rows if r["task"] == task and not (task.startswith("kws") and r["group"] in reserved)]
        test = [r for r in mine if r["split"] == "test"]
        picked = [dict(r, split="test") for r in _draw(test, recipe.max_test, rng)]
        if task in seen:
            train = _draw([r for r in mine if r["split"] == "train"], recipe.max_train, rng)
            groups = sorted({r["group"] for r in train})
            n_dev = max(1, int(round(recipe.dev_frac * len(groups)))) if len(groups) > 1 else 0
            dev = {groups[i] for i in rng.permutation(len(groups))[:n_dev]}
            picked += [dict(r, split="dev" if r["group"] in dev else "train") for r in train]
        out += [dict(r, seen=str(task in seen)) for r in picked]
    return out


def _draw(rows: list[dict[str, str]], n: int, rng: np.random.Generator) -> list[dict[str, str]]:
    if len(rows) <= n:
        return rows
    return [rows[i] for i in sorted(rng.choice(len(rows), n, replace=False))]


def assign_fakes(bona: list[dict[str, str]], generators: dict[str, tuple[tuple[str, ...], tuple[str, ...]]],
                 seed: int) -> list[dict[str, str]]:
    """One fake per bona fide clip and set: train/dev (seen generators, seen tasks) and each test set that takes
    the clip's task; the generator is drawn per clip. Returns manifest rows (bona fide and fake) with ``set``."""
    rows = []
    for track, (g_seen, g_unseen) in generators.items():
        for r in bona:
            if track == "tta" and fakes.task_kind(r["task"]) == "none":
                continue  # no label-to-audio generator for this task (speaker identity)
            rng = task_rng(seed, "fake", track, r["file"])
            sets = [r["split"]] if r["split"] != "test" else \
                [s for s, (_, src_seen) in TEST_SETS.items() if src_seen == (r["seen"] == "True")]
            for s in sets:
                pool = g_seen if s in ("train", "dev") or TEST_SETS[s][0] else g_unseen
                if not pool:
                    continue
                gen = str(pool[int(rng.integers(len(pool)))])
                rows.append(dict(r, track=track, set=s, generator="bonafide", path=f"bonafide/{r['file']}"))
                rows.append(dict(r, track=track, set=s, generator=gen, path=f"{track}/{gen}/{r['file']}"))
    return rows


def build_spoof(out: str | os.PathLike, source_dir: str | os.PathLike, recipe: SpoofRecipe = SpoofRecipe(),
                seed: int = 0, workers: int | None = None, progress: bool = True) -> Path:
    """Build the spoof corpus in ``out`` from the built corpus ``source_dir`` (see the module docstring)."""

    t0 = time.perf_counter()
    out, source_dir = Path(out), Path(source_dir)
    (out / "build_info.json").unlink(missing_ok=True)
    for name in ("bonafide", *TRACKS):
        shutil.rmtree(out / name, ignore_errors=True)
    skipped = {g: "libsndfile cannot write it" for g in fakes.CODECS if not fakes.codec_available(g)}
    if skipped:
        print(f"note: skipping generators {', '.join(skipped)}: the installed libsndfile cannot write them",
              file=sys.stderr)
    gens = {t: tuple(tuple(g for g in pool if g not in skipped) for pool in pools) for t, pools in TRACKS.items()}
    bona = plan(_read_metadata(source_dir), recipe, seed)
    rows = assign_fakes(bona, gens, seed)
    jobs = {r["path"]: Job(str(source_dir / r["file"]), str(out / r["path"]), r["generator"], r["task"], r["label"],
                           stable_hash(seed, r["path"])) for r in rows}
    levels = _render(list(jobs.values()), workers, progress)
    _write_outputs(out, rows)
    from audiomosaic.data.corpus import leakage_report  # late: corpus.build dispatches to this module

    leaks = leakage_report(out)
    if any(leaks.values()):
        raise RuntimeError(f"{out}: split leakage {leaks}; the build is left unstamped")
    counts = {t: {s: {c: sum(r["track"] == t and r["set"] == s and (r["generator"] == "bonafide") == (c == "bonafide")
                             for r in rows) for c in CLASSES} for s in SETS} for t in TRACKS}
    fake_levels = [v for j, v in zip(jobs.values(), levels) if j.generator != "bonafide"]
    info = {"recipe": "spoof", "source": recipe.source, "seed": int(seed), "version": SPOOF_VERSION,
            "recipe_options": recipe.__dict__, "generators": {t: {"seen": g[0], "unseen": g[1]} for t, g in gens.items()},
            "source_tasks": dict(zip(("seen", "unseen"), SOURCE_TASKS[recipe.source])), "skipped": skipped,
            "counts": counts, "files": len(jobs), "seconds_render": round(time.perf_counter() - t0, 2),
            "bytes": sum(f.stat().st_size for f in out.rglob("*.wav")),
            "level_mismatch_db_max": round(max(map(abs, fake_levels), default=0.0), 3), "leakage": leaks}
    info["trivial_cue"] = trivial_cue_baseline(out)
    info["seconds"] = round(time.perf_counter() - t0, 2)
    (out / "build_info.json").write_text(json.dumps(info, indent=1))
    return out


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _render(jobs: list[Job], workers: int | None, progress: bool) -> list[float]:
    from tqdm.auto import tqdm

    workers = workers or len(os.sched_getaffinity(0))
    bar = tqdm(total=len(jobs), desc="build spoof", unit="clip", disable=not progress, file=sys.stderr)
    results = []
    if workers <= 1:
        for j in jobs:
            results.append(_run_job(j))
            bar.update(1)
    else:  # fork + one torch thread per worker, as DataLoader workers (torch's pool is unsafe after a fork)
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(workers, initializer=_one_thread) as pool:
            for v in pool.imap(_run_job, jobs, chunksize=16):
                results.append(v)
                bar.update(1)
    bar.close()
    return results


def _write_outputs(out: Path, rows: list[dict[str, str]]) -> None:
    """Manifests per track and set, class CSVs, ``pretrain.json`` (bona fide train only) and ``metadata.csv``."""
    for track in TRACKS:
        (out / track).mkdir(parents=True, exist_ok=True)
        with open(out / track / "class_labels_indices.csv", "w", newline="") as f:
            csv.writer(f).writerows([["index", "mid", "display_name"], *[[i, c, c] for i, c in enumerate(CLASSES)]])
        for s in SETS:
            data = [{"wav": os.path.relpath(r["path"], track), "generator": r["generator"], "task": r["task"],
                     "group": r["group"], "labels": "bonafide" if r["generator"] == "bonafide" else "spoof"}
                    for r in rows if r["track"] == track and r["set"] == s]
            (out / track / f"{s}.json").write_text(json.dumps({"data": data}, indent=1))
    pool = sorted({r["path"] for r in rows if r["generator"] == "bonafide" and r["split"] == "train"})
    (out / "pretrain.json").write_text(json.dumps({"data": [{"wav": p, "labels": ""} for p in pool]}, indent=1))
    meta = {r["path"]: r for r in rows}
    with open(out / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "task", "label", "group", "split", "generator", "source_label", "source_file"])
        for p in sorted(meta):
            r = meta[p]
            w.writerow([p, r["task"], "bonafide" if r["generator"] == "bonafide" else "spoof", r["group"],
                        r["split"], r["generator"], r["label"], r["file"]])


def logmel_stats(path: str | os.PathLike) -> np.ndarray:
    """Per-band mean and std of the clip's 128-bin Kaldi log-mel (no padding): (256,)."""

    wav = audio.read_audio_np(path)
    feat = fbank(wav, audio.SAMPLE_RATE, FrontendConfig(target_frames=num_frames(len(wav)))).numpy()
    return np.concatenate([feat.mean(axis=0), feat.std(axis=0)])


def _features(out: Path, track: str, name: str, cache: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(N, 256) log-mel statistics and (N,) labels (1 = bona fide) of one manifest; features cached by file."""
    data = json.loads((out / track / f"{name}.json").read_text())["data"]
    paths = [os.path.normpath(out / track / e["wav"]) for e in data]
    for p in paths:
        if p not in cache:
            cache[p] = logmel_stats(p)
    return np.stack([cache[p] for p in paths]), np.array([CLASSES.index(e["labels"]) for e in data])


def trivial_cue_baseline(out: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Log-mel statistics + logistic regression trained on each track's train set; EER (authors' mode) per test
    set. A low EER here means real and fake differ by a cue a linear model on global spectra finds."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler


    out, cache, result = Path(out), {}, {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one short fbank per clip: intra-op threads only add overhead (10x on 2 busy cores)
    try:
        for track in TRACKS:
            x, y = _features(out, track, "train", cache)
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x, y)
            result[track] = {}
            for name in TEST_SETS:
                xt, yt = _features(out, track, name, cache)
                if len(set(yt)) == 2:
                    result[track][name] = round(eer_roc(clf.predict_proba(xt)[:, 1], yt)[0], 4)
    finally:
        torch.set_num_threads(threads)
    return result
