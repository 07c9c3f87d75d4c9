"""Fine-tuning with a dev split and several test sets: EnvSDD-style spoof detection (docs/method.md §8).

``run_finetune`` lands here when ``FinetuneConfig.dev_manifest`` or ``test_sets`` is set. The fine-tune trains on
the train manifest and evaluates the dev split (only) every ``eval_every`` epochs; ``best.safetensors`` holds the
epoch with the best dev metric (EER with ``eer=True``: lowest; ties keep the earlier epoch). After training, the
last model and the best-on-dev model are each evaluated once on the dev split and on every test set: per set (and,
when the manifests name a ``generator`` per item, per generator) the EER in the authors' mode, the interpolated
EER and the ROC AUC, class 1 (bona fide) positive, scores = softmax probability of class 1 (as the authors).

Model selection: the authors choose the best epoch on **test01** (their ``engine_finetune``: best EER over the
evaluations of the test set). This kit reports the LAST epoch (docs/method.md Decision 5) and the best epoch
chosen on the **dev** split; no test set is read before training ends, so neither choice can see one.

Manifests: ``data.manifest`` (the train manifest: the authors' AudioSet JSON, a CSV or a class-folder tree, read by
:func:`audiomosaic.data.manifest.load_manifest`), else ``<corpus>/<data.task>/train.json`` of a built corpus
(``data.recipe=spoof data.task=ata`` for the offline spoof corpus). ``dev_manifest`` and each ``test_sets`` entry
is a path, or a bare name resolved as ``<train manifest's folder>/<name>.json`` (``dev``, ``test01``...).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from audiomosaic.config import EncoderConfig, FinetuneConfig, from_dict
from audiomosaic.data import AudioDataset, Manifest, collate
from audiomosaic.data.manifest import load_manifest
from audiomosaic.frontend import fbank_batch
from audiomosaic.metrics import evaluate_sets, task_metrics
from audiomosaic.model import AudioMosaic
from audiomosaic.train.finetune import finetune_task, make_classifier
from audiomosaic.train.probe import corpus_root
from audiomosaic.train.runlog import write_json_atomic
from audiomosaic.train.runtime import autocast, resolve_device, resolve_precision

ENVSDD_SETS = ("test01", "test02", "test03", "test04")
EPOCH_CHOICES = ("last", "best_dev")  # the model files model.safetensors / best.safetensors
SPOOF_METRICS = ("eer", "eer_interp", "auc")


# ------------------------------------------------------------------------------------------------ manifests

def train_path(cfg: FinetuneConfig) -> Path:
    """The train manifest: ``data.manifest``, else ``<corpus>/<data.task>/train.json``."""
    if cfg.data.manifest:
        return Path(cfg.data.manifest)
    return corpus_root(cfg.data) / cfg.data.task / "train.json"


def set_path(name: str, train: Path) -> Path:
    """A ``dev_manifest`` / ``test_sets`` entry: a path as given when it names a file or folder (or has a suffix),
    else ``<train manifest's folder>/<name>.json``."""
    p = Path(name)
    if p.suffix or p.exists():
        return p
    return (train.parent if train.suffix else train) / f"{name}.json"


def set_label(name: str) -> str:
    """The name a set is reported under: the entry itself for bare names, the file stem for paths."""
    return Path(name).stem if (Path(name).suffix or "/" in name) else name


def generators(path: Path, manifest: Manifest) -> list[str] | None:
    """The ``generator`` field of each item of a JSON manifest (EnvSDD style), None when absent."""
    if path.suffix != ".json":
        return None
    entries = json.loads(path.read_text())["data"]
    if len(entries) != len(manifest) or not any("generator" in e for e in entries):
        return None
    return [str(e.get("generator", "")) for e in entries]


def check_binary(m: Manifest) -> None:
    """EER/AUC take class 1 as positive: a manifest with ``bonafide`` must have it at index 1 (spoof = 0)."""
    if m.num_classes != 2:
        raise ValueError(f"{m.name}: EER/AUC need a binary task, got {m.num_classes} classes")
    if "bonafide" in m.mids and m.mids.index("bonafide") != 1:
        raise ValueError(f"{m.name}: class 'bonafide' must be index 1 (class_labels_indices.csv: 0 spoof, 1 bonafide)")


# ------------------------------------------------------------------------------------------------- evaluation

def load_classifier(path: str | Path, cfg: FinetuneConfig) -> AudioMosaic:
    """A fine-tuned classifier written by the engine (``model.safetensors`` / ``best.safetensors``), strictly."""
    path = Path(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    n = 2 if cfg.head == "aasist" else int(meta["num_classes"])
    model = make_classifier(from_dict(EncoderConfig, meta["encoder"]), cfg, n)
    model.load_state_dict(load_file(str(path)))
    return model


@torch.no_grad()
def predict(model: AudioMosaic, manifest: Manifest, cfg: FinetuneConfig) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) logits and (N, C) targets of ``manifest`` (no augmentation, clips cut/padded to data.clip_seconds)."""
    device = resolve_device(cfg.runtime.device)
    dtype = resolve_precision(cfg.runtime.precision, device)
    model.to(device).eval()
    clip = int(round(cfg.data.clip_seconds * cfg.frontend.sample_rate))
    loader = DataLoader(AudioDataset(manifest, cfg.frontend.sample_rate, clip), batch_size=cfg.data.batch_size,
                        num_workers=cfg.data.num_workers, collate_fn=collate)
    logits, targets = [], []
    for batch in loader:
        if len(batch["index"]) == 0:
            continue
        spec = fbank_batch(batch["wav"].to(device), cfg.frontend, batch["length"].to(device))
        with autocast(device, dtype):
            logits.append(model(spec).float().cpu())
        targets.append(batch["target"])
    if sum(len(t) for t in targets) != len(manifest):
        raise ValueError(f"{manifest.name}: some clips could not be decoded; every test clip must be scored")
    return torch.cat(logits).numpy(), torch.cat(targets).numpy()


def evaluate_model(model: AudioMosaic, sets: Mapping[str, tuple[Manifest, list[str] | None]], cfg: FinetuneConfig
                   ) -> list[dict[str, Any]]:
    """Per-set rows: :func:`audiomosaic.metrics.evaluate_sets` (binary with ``eer``: EER both ways, AUC, per
    generator) or the task metrics (``generator`` = "all")."""
    rows = []
    for name, (m, gens) in sets.items():
        logits, targets = predict(model, m, cfg)
        if cfg.eer:
            z = logits - logits.max(axis=1, keepdims=True)
            prob = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)  # the authors' softmax scores
            rows += evaluate_sets({name: (prob[:, 1], targets[:, 1], gens)})
        else:
            rows.append({"set": name, "generator": "all", **task_metrics(logits, targets, m.multi_label)})
    return rows


# ------------------------------------------------------------------------------------------------------ run

def run_sets(cfg: FinetuneConfig, encoder: AudioMosaic | str | Path | None, run_dir: str | Path, *,
             train: Manifest | None = None, resume: bool = False) -> dict[str, Any]:
    """Fine-tune on the train manifest with per-epoch evaluation on ``dev_manifest`` only, then evaluate the last
    and the best-on-dev models on the dev split and every ``test_sets`` manifest. Writes the engine's files plus
    ``best.safetensors`` and ``results.json`` with ``sets``: one row per (epoch_choice, set, generator).

    The authors select the best epoch on test01; here the selection split is dev and the test sets are first read
    after training (tests/test_spoof_finetune.py checks it).

    Raises:
        ValueError: no ``dev_manifest``, a missing manifest, or a binary-metric run on a non-binary task.
    """
    if not cfg.dev_manifest:
        raise ValueError("test_sets need dev_manifest: the split evaluated during training and the best epoch is "
                         "chosen on (never a test set)")
    run_dir = Path(run_dir)
    tpath = train_path(cfg)
    paths = {set_label(n): set_path(n, tpath) for n in (cfg.dev_manifest, *cfg.test_sets)}
    missing = [str(p) for p in [tpath, *paths.values()] if not p.exists()]
    if missing:
        raise ValueError(f"missing manifest(s): {missing}")
    if train is None:
        train = load_manifest(tpath)
    dev_name = set_label(cfg.dev_manifest)
    dev = load_manifest(paths[dev_name])
    if cfg.eer:
        check_binary(train)
        check_binary(dev)
    out = finetune_task(cfg, encoder, run_dir, train, dev, resume)  # reads train and dev only
    sets: dict[str, tuple[Manifest, list[str] | None]] = {}
    for name, p in paths.items():  # the test sets are loaded only now, after the last epoch
        m = dev if name == dev_name else load_manifest(p)
        if cfg.eer:
            check_binary(m)
        sets[name] = (m, generators(p, m))
    best_meta = json.loads((run_dir / "best.json").read_text())
    epochs = {"last": int(out["epoch"]), "best_dev": int(best_meta["epoch"])}
    rows, done = [], {}
    for choice, file in zip(EPOCH_CHOICES, ("model.safetensors", "best.safetensors")):
        if epochs[choice] not in done:  # the best dev epoch is often the last: the same weights, scored once
            done[epochs[choice]] = evaluate_model(load_classifier(run_dir / file, cfg), sets, cfg)
        rows += [{"epoch_choice": choice, "epoch": epochs[choice], **r} for r in done[epochs[choice]]]
    out = {**out, "head": cfg.head, "dev_set": dev_name, "test_sets": [set_label(n) for n in cfg.test_sets],
           "best_dev": {"epoch": epochs["best_dev"], "metric": out["metric"], "dev_value": best_meta["dev_value"]},
           "selection": "last_epoch; best_dev = best dev-split epoch (the authors select on test01)", "sets": rows}
    write_json_atomic(run_dir / "results.json", out)
    return out


# ---------------------------------------------------------------------------------------------------- table

def spoof_rows(out: Mapping[str, Any], track: str, model: str, generators_too: bool = False
               ) -> list[dict[str, Any]]:
    """``run_sets`` output -> rows of ``table_spoof``: track, head, model, test_set, generator, metric
    (eer / eer_interp / auc), value, epoch_choice (last / best_dev), epoch. Per-generator rows only if asked."""
    rows = []
    for r in out["sets"]:
        if r["generator"] != "all" and not generators_too:
            continue
        for metric in SPOOF_METRICS:
            if metric in r:
                rows.append({"track": track, "head": out["head"], "model": model, "test_set": r["set"],
                             "generator": r["generator"], "metric": metric, "value": float(r[metric]),
                             "epoch_choice": r["epoch_choice"], "epoch": int(r["epoch"])})
    return rows


def summary(rows: Sequence[Mapping[str, Any]], metric: str = "eer") -> str:
    """A compact text table: one line per (epoch_choice, set) with ``metric`` in %."""
    lines = [f"{'choice':9s} {'set':8s} {'epoch':>5s} {metric + ' %':>9s}  auc"]
    for r in rows:
        if r["generator"] == "all" and metric in r:
            lines.append(f"{r['epoch_choice']:9s} {r['set']:8s} {r['epoch']:5d} {100 * r[metric]:9.2f}  "
                         f"{r.get('auc', float('nan')):.4f}")
    return "\n".join(lines)
