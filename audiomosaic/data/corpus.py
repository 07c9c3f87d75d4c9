"""Build a corpus from a recipe: plan every task, render clips in worker processes, write manifests last.

Layout of ``<out>`` (docs/data.md Decisions):

- ``<task>/<split>/<label>/<name>.wav``: 16 kHz mono 16-bit PCM;
- ``<task>/train.json``, ``<task>/test.json``: the authors' layout ``{"data": [{"wav", "labels"}]}`` with paths
  **relative to the manifest's folder** (so a corpus can be moved); ``labels`` are comma-joined ``mid``s;
- ``<task>/class_labels_indices.csv``: ``index,mid,display_name`` (mid = the label's folder name);
- ``pretrain.json``: the unlabelled pre-training pool (train splits of all tasks; ``labels`` empty);
- ``metadata.csv``: ``file,task,label,group,split`` for every clip;
- ``onthefly/*.json``: specs of render-on-the-fly datasets (``large`` only, see :mod:`.onthefly`);
- ``build_info.json``: written last; a complete build of the same recipe, seed and builder version is reused.
"""
from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from audiomosaic.data.apt_sources import SourceUnavailable
from audiomosaic.data.audio import SAMPLE_RATE, write_wav
from audiomosaic.data.recipes import Clip, TaskPlan, recipes
from audiomosaic.data.spoof import SOURCE_TASKS, SPOOF_VERSION, SpoofRecipe, build_spoof
from audiomosaic.paths import cache_dir, data_dir

BUILD_VERSION = 1  # bump whenever a builder's output for a given seed changes


def build(recipe: str, out: str | os.PathLike, seed: int = 0, progress: bool = True, workers: int | None = None,
          force: bool = False, cache: str | os.PathLike | None = None, source: str = "default",
          source_dir: str | os.PathLike | None = None) -> Path:
    """Build (or reuse) the corpus of ``recipe`` in ``out`` and return ``out``.

    Args:
        recipe: ``tiny`` (pip only, seconds), ``default`` (CPU notebooks; adds apt sources when available) or
            ``large`` (GPU machine).
        out: output folder (created).
        seed: every random choice (voices, prosody, programs, held-out groups) derives from it.
        progress: show a tqdm bar.
        workers: render processes (default: the usable CPU count).
        force: rebuild even if ``out`` holds a complete build of the same recipe and seed.
        cache: where Debian packages are downloaded/extracted (default :func:`audiomosaic.paths.cache_dir`).
        source: ``spoof`` only: the corpus whose clips are the bona fide side (``default`` or ``tiny``).
        source_dir: ``spoof`` only: where that corpus is (default ``data/built/<source>``; built if missing).

    Raises:
        ValueError: unknown recipe (naming the allowed ones).
    """
    all_recipes = recipes()
    if recipe == "spoof":
        return _build_spoof(Path(out), seed, progress, workers, force, cache, source, source_dir)
    if recipe not in all_recipes:
        raise ValueError(f"unknown recipe {recipe!r}; allowed: {', '.join([*all_recipes, 'spoof'])}")
    out = Path(out)
    if not force and is_built(out, recipe, seed):
        return out
    key = {"recipe": recipe, "seed": int(seed), "version": BUILD_VERSION}
    stamp = out / "build_info.json"
    old = json.loads(stamp.read_text()) if stamp.is_file() else {}
    t0 = time.perf_counter()
    stamp.unlink(missing_ok=True)
    plans, specs, skipped = _plan(all_recipes[recipe], int(seed), Path(cache) if cache else cache_dir())
    for name in {*old.get("tasks", {}), *(p.name for p in plans), "onthefly"}:
        shutil.rmtree(out / name, ignore_errors=True)  # no stale clips from an earlier build survive
    out.mkdir(parents=True, exist_ok=True)
    clips = [c for p in plans for c in p.clips]
    kept = _render(out, clips, workers, progress, recipe)
    tasks = {p.name: _write_task(out, p, [c for c in kept if c.task == p.name]) for p in plans}
    _write_pool(out, kept)
    for spec in specs:
        spec.write(out / "onthefly" / f"{spec.name}.json", int(seed))
    leaks = leakage_report(out)
    if any(leaks.values()):  # a builder bug: refuse to stamp a corpus whose test audio could leak
        raise RuntimeError(f"{out}: split leakage {leaks}; the build is left unstamped")
    info = {**key, "tasks": tasks, "skipped": skipped, "onthefly": [s.name for s in specs],
            "clips": len(kept), "dropped": len(clips) - len(kept), "seconds": round(time.perf_counter() - t0, 2),
            "bytes": sum(f.stat().st_size for f in out.rglob("*.wav")), "leakage": leaks}
    stamp.write_text(json.dumps(info, indent=1))
    return out


def leakage_report(out: str | os.PathLike) -> dict[str, int]:
    """Counts that must all be 0 in a built corpus, read back from the files it wrote (docs/data.md §4):

    ``test_in_pretrain`` (test files in ``pretrain.json``), ``test_in_train_manifests`` (test files listed in some
    ``<task>/train.json``), ``groups_in_both_splits`` ((task, group) pairs with clips on both sides) and
    ``missing_from_metadata`` (manifest files that ``metadata.csv`` does not describe). Corpora with generated
    clips (a ``generator`` column, the spoof recipe) add ``fakes_in_pretrain``: fakes must never be pre-trained on.
    """
    out = Path(out)
    with open(out / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    split = {r["file"]: r["split"] for r in rows}
    sides: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        sides.setdefault((r["task"], r["group"]), set()).add(r["split"])
    pool = [e["wav"] for e in json.loads((out / "pretrain.json").read_text())["data"]]  # corpus-relative
    train = [os.path.normpath(f"{m.parent.name}/{e['wav']}")  # task-relative (may be ../) -> corpus-relative
             for m in out.glob("*/train.json") for e in json.loads(m.read_text())["data"]]
    report = {"test_in_pretrain": sum(split.get(w) == "test" for w in pool),
              "test_in_train_manifests": sum(split.get(w) == "test" for w in train),
              "groups_in_both_splits": sum(len(s) > 1 for s in sides.values()),
              "missing_from_metadata": sum(w not in split for w in pool + train)}
    if rows and "generator" in rows[0]:
        generator = {r["file"]: r["generator"] for r in rows}
        report["fakes_in_pretrain"] = sum(generator.get(w, "bonafide") != "bonafide" for w in pool)
    return report


def is_built(out: str | os.PathLike, recipe: str, seed: int = 0, source: str = "default") -> bool:
    """True when ``out`` holds a complete build of ``recipe`` and ``seed`` (and ``source`` for ``spoof``) by
    this builder version."""

    stamp = Path(out) / "build_info.json"
    if not stamp.is_file():
        return False
    info = json.loads(stamp.read_text())
    if recipe == "spoof":
        return (info.get("recipe"), info.get("seed"), info.get("version"), info.get("source")) == \
            (recipe, int(seed), SPOOF_VERSION, source)
    return (info.get("recipe"), info.get("seed"), info.get("version")) == (recipe, int(seed), BUILD_VERSION)


def _build_spoof(out: Path, seed: int, progress: bool, workers: int | None, force: bool,
                 cache: str | os.PathLike | None, source: str, source_dir: str | os.PathLike | None) -> Path:
    """The spoof corpus (:mod:`.spoof`) from a built ``source`` corpus, building that first when needed."""

    if source not in SOURCE_TASKS:
        raise ValueError(f"unknown spoof source {source!r}; allowed: {', '.join(SOURCE_TASKS)}")
    if not force and is_built(out, "spoof", seed, source):
        return out
    src = Path(source_dir) if source_dir else data_dir(source)
    build(source, src, seed=seed, progress=progress, workers=workers, cache=cache)  # reused when complete
    return build_spoof(out, src, SpoofRecipe(source=source), seed=seed, workers=workers, progress=progress)


def _plan(tasks: tuple, seed: int, cache: Path) -> tuple[list[TaskPlan], list, dict[str, str]]:
    """Plan every task; apt-sourced ones that cannot be fetched are skipped with one message for all."""
    plans, specs, skipped = [], [], {}
    for task in tasks:
        if hasattr(task, "write"):  # an on-the-fly dataset spec, not files
            specs.append(task)
            continue
        try:
            plans.append(task.plan(seed, cache))
        except SourceUnavailable as e:
            skipped[task.name] = str(e)
    if skipped:
        reasons = "; ".join(sorted(set(skipped.values())))
        print(f"note: skipping {', '.join(skipped)} (needs Debian packages): {reasons}. The other tasks are "
              f"built; rebuild with --force once apt works (try `apt-get update`).", file=sys.stderr)
    return plans, specs, skipped


def _render_one(job: tuple[str, Clip]) -> bool:
    out, clip = job
    wav = clip.spec.render(SAMPLE_RATE)
    if wav is None:
        return False
    write_wav(Path(out) / clip.relpath, wav, SAMPLE_RATE)
    return True


def _render(out: Path, clips: list[Clip], workers: int | None, progress: bool, desc: str) -> list[Clip]:
    """Render and write every clip; returns those kept (silent renders are dropped), in plan order."""
    paths = [c.relpath for c in clips]
    if len(set(paths)) != len(paths):
        raise RuntimeError("recipe bug: two clips map to the same file")
    workers = workers or len(os.sched_getaffinity(0))
    jobs = [(str(out), c) for c in clips]
    bar = tqdm(total=len(jobs), desc=f"build {desc}", unit="clip", disable=not progress, file=sys.stderr)
    results = []
    if workers <= 1:
        for job in jobs:
            results.append(_render_one(job))
            bar.update(1)
    else:
        # fork: workers start instantly and share no synth state (espeak/tinysoundfont objects are per pid)
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(workers) as pool:
            for ok in pool.imap(_render_one, jobs, chunksize=16):
                results.append(ok)
                bar.update(1)
    bar.close()
    return [c for c, ok in zip(clips, results) if ok]


def _manifest(entries: list[tuple[str, str]]) -> str:
    return json.dumps({"data": [{"wav": w, "labels": lab} for w, lab in sorted(entries)]}, indent=1)


def _write_task(out: Path, plan: TaskPlan, clips: list[Clip]) -> dict:
    """Per-task manifests (paths relative to ``<out>/<task>``) and class CSV; returns the split counts."""
    folder = out / plan.name
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "class_labels_indices.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "mid", "display_name"])
        for i, lab in enumerate(plan.labels):
            w.writerow([i, lab, lab.replace("_", " ")])
    counts = {}
    for split in ("train", "test"):
        entries = [(c.relpath.split("/", 1)[1], c.label) for c in clips if c.split == split]
        (folder / f"{split}.json").write_text(_manifest(entries))
        counts[split] = len(entries)
        missing = set(plan.labels) - {lab for _, lab in entries}
        if missing:
            print(f"warning: {plan.name}/{split} has no clip of {sorted(missing)}", file=sys.stderr)
    counts["classes"] = len(plan.labels)
    return counts


def _write_pool(out: Path, clips: list[Clip]) -> None:
    """``pretrain.json`` (train splits only: test audio never enters pre-training) and ``metadata.csv``."""
    (out / "pretrain.json").write_text(_manifest([(c.relpath, "") for c in clips if c.split == "train"]))
    with open(out / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "task", "label", "group", "split"])
        for c in sorted(clips, key=lambda c: c.relpath):
            w.writerow([c.relpath, c.task, c.label, c.group, c.split])
