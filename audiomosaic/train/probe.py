"""Probes of a frozen encoder (docs/method.md §9): linear, layer-wise, weighted-sum and attentive heads, trained together.

The encoder runs ONCE over the train and test clips in eval mode (no drop path, no masking) and every entry's
pooled features are kept (:func:`audiomosaic.heads.pooled_entries`); each requested head then trains on those
cached features with its own AdamW (blr scaling, per-step warmup + cosine). Every head starts from the same seed
and sees the same batch order, so a head's result does not depend on which other heads run beside it.

Loss: BCE for multi-label tasks, cross-entropy for single-label ones (``loss=auto``). The reported number is the
LAST epoch's (docs/method.md Decision 5); ``report_best`` adds the best-on-test epoch, labelled as such.

Run directory: ``config.json``, ``metrics.jsonl`` (one line per epoch per head, then one per result),
``results.json`` and ``features.pt`` (the pooled features, reused by ``--resume``).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from audiomosaic.config import (
    DataConfig,
    FinetuneConfig,
    ProbeConfig,
    apply_overrides,
    config_hash,
    resolve,
    to_dict,
)
from audiomosaic.data import AudioDataset, CachedFeatureDataset, FeatureCache, Manifest, SkipCounter, build, collate
from audiomosaic.data.manifest import load_audioset, load_esc50, load_manifest, load_speech_commands
from audiomosaic.frontend import fbank_batch
from audiomosaic.heads import ProbeHead, pooled_entries
from audiomosaic.metrics import primary_metric, task_metrics
from audiomosaic.model import AudioMosaic
from audiomosaic.paths import cache_dir, data_dir
from audiomosaic.presets import PROBE_PRESETS
from audiomosaic.train.checkpoint import load_any
from audiomosaic.train.optim import cosine_lr, make_schedule, param_groups, set_lr
from audiomosaic.train.runlog import MetricsLog, default_run_dir, progress_bar, write_config, write_json_atomic
from audiomosaic.train.runtime import autocast, resolve_device, resolve_precision, seed_everything
from audiomosaic.train.step import optimizer_step, split_batch

BEST_LABEL = "best-on-test epoch (optimistic model selection on the test set; docs/method.md Decision 5)"


# ------------------------------------------------------------------------------------------------------- data

def corpus_root(data: DataConfig) -> Path:
    """``data.root``, or the recipe's default folder, built on first use (``audiomosaic.data.build``)."""
    if data.root:
        return Path(data.root)

    return build(data.recipe, data_dir(data.recipe), progress=False)


def task_manifests(data: DataConfig, fold: int = 1) -> tuple[Manifest, Manifest]:
    """(train, test) manifests of the configured task.

    ``data.manifest`` may name an ESC-50 root (test = ``fold``), a Speech Commands root (``data.task`` spc1 -> v1,
    else v2), or a train manifest (JSON/CSV/class folders) whose test manifest is ``data.test_manifest``.
    Otherwise the task is ``<corpus>/<data.task>/{train,test}.json`` of a built corpus.

    Raises:
        ValueError: a missing task (listing the corpus' tasks) or a missing test manifest.
    """
    if data.manifest:
        src = Path(data.manifest)
        if (src / "meta" / "esc50.csv").is_file():
            return load_esc50(src, fold, "train"), load_esc50(src, fold, "test")
        if (src / "testing_list.txt").is_file():
            version = 1 if data.task == "spc1" else 2
            return load_speech_commands(src, version, "train"), load_speech_commands(src, version, "test")
        if not data.test_manifest:
            raise ValueError(f"data.manifest={data.manifest!r} needs data.test_manifest (the evaluation split)")
        return load_manifest(src), load_manifest(data.test_manifest)
    root = corpus_root(data)
    task_dir = root / data.task
    if not (task_dir / "train.json").is_file():
        tasks = sorted(p.parent.name for p in root.glob("*/train.json"))
        raise ValueError(f"no task {data.task!r} in {root}; available: {', '.join(tasks) or 'none'}")
    return load_audioset(task_dir / "train.json"), load_audioset(task_dir / "test.json")


def task_name(data: DataConfig, train: Manifest) -> str:
    """``data.task``, or the manifest's name when the data come from an explicit manifest file."""
    return train.name if data.manifest and Path(data.manifest).is_file() else data.task


def is_multi_label(train: Manifest, test: Manifest) -> bool:
    if train.num_classes != test.num_classes:
        raise ValueError(f"train ({train.num_classes}) and test ({test.num_classes}) class lists differ")
    return train.multi_label or test.multi_label


def loss_kind(loss: str, multi_label: bool) -> str:
    """``auto`` -> ``bce`` for multi-label tasks, ``ce`` for single-label ones (docs/method.md §8, §9)."""
    if loss not in ("auto", "bce", "ce"):
        raise ValueError(f"unknown loss {loss!r}; allowed: auto, bce, ce")
    return ("bce" if multi_label else "ce") if loss == "auto" else loss


def task_loss(logits: torch.Tensor, target: torch.Tensor, kind: str,
              class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """BCE on (B, C) multi-hot targets, or cross-entropy on (B, C) class probabilities (one-hot or mixed)."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits.float(), target.float())
    return F.cross_entropy(logits.float(), target.float(), weight=class_weights)


def audio_loader(manifest: Manifest, cfg: ProbeConfig, batch_size: int) -> DataLoader:
    """In-order batches of waveforms, or of cached fbanks when ``data.cache_features``."""
    clip = int(round(cfg.data.clip_seconds * cfg.frontend.sample_rate))  # both paths cut clips alike
    if cfg.data.cache_features:
        cache = FeatureCache(cache_dir() / "features", manifest, cfg.frontend, clip_samples=clip).build(
            batch_size, cfg.data.num_workers, progress=cfg.runtime.progress)
        ds = CachedFeatureDataset(cache)
    else:
        ds = AudioDataset(manifest, cfg.frontend.sample_rate, clip)
    return DataLoader(ds, batch_size=batch_size, num_workers=cfg.data.num_workers, collate_fn=collate)


@torch.no_grad()
def extract_features(model: AudioMosaic, manifest: Manifest, cfg: ProbeConfig, device: torch.device,
                     keys: Sequence[str] = ("mean",)) -> dict[str, torch.Tensor]:
    """One eval-mode pass: {key: (N, depth + 1, D) pooled entries on CPU, "target": (N, C)}; skipped files dropped."""
    model.eval()
    dtype = resolve_precision(cfg.runtime.precision, device)
    out: dict[str, list[torch.Tensor]] = {k: [] for k in (*keys, "target")}
    skips = SkipCounter()
    loader = audio_loader(manifest, cfg, cfg.extract_batch)
    bar = progress_bar(len(loader), cfg.runtime.progress, desc=f"features {manifest.name}")
    for batch in loader:
        skips.update(batch)
        bar.update(1)
        if len(batch["index"]) == 0:
            continue
        spec = (batch["spec"].to(device) if "spec" in batch else
                fbank_batch(batch["wav"].to(device), cfg.frontend, batch["length"].to(device)))
        with autocast(device, dtype):
            feats = pooled_entries(model, spec)
        for k in keys:
            out[k].append(feats[k].float().cpu())
        out["target"].append(batch["target"].float())
    bar.close()
    if skips.total:
        print(skips.report(), file=sys.stderr)
    if not out["target"]:
        raise ValueError(f"no usable clip in {manifest.name}")
    return {k: torch.cat(v) for k, v in out.items()}


# ------------------------------------------------------------------------------------------------------ heads

def head_specs(cfg: ProbeConfig, depth: int) -> dict[str, tuple[str, int]]:
    """name -> (kind, entry). Entries 0..depth-1 are block outputs, entry depth the final output."""
    specs: dict[str, tuple[str, int]] = {}
    for kind in cfg.heads:
        if kind not in ("linear", "weighted", "attentive"):
            raise ValueError(f"unknown probe head {kind!r}; allowed: linear, weighted, attentive")
        if kind != "linear":
            specs[kind] = (kind, depth)
            continue
        layers = [*(range(depth) if cfg.all_layers else ()), *cfg.layers]
        for layer in layers:
            if not -(depth + 1) <= layer <= depth:
                raise ValueError(f"probe layer {layer} outside [-{depth + 1}, {depth}] for a {depth}-block encoder")
            entry = layer % (depth + 1)
            specs["linear" if entry == depth else f"linear_block{entry}"] = ("linear", entry)
    return specs


def build_head(kind: str, entry: int, model: AudioMosaic, num_classes: int, seed: int) -> ProbeHead:
    """A head initialised from ``seed`` alone (so it is the same whatever other heads exist); its LayerNorm
    starts from the encoder's pre-trained ``fc_norm``, as in the authors' probes."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = ProbeHead(model.cfg.embed_dim, num_classes, kind, len(model.blocks) + 1, entry)
    head.init_norm_from(model.fc_norm)
    return head


def _adamw(head: ProbeHead, cfg: ProbeConfig) -> torch.optim.AdamW:
    groups = param_groups(head, cfg.optim.weight_decay, no_decay_names={"entry_norm_w", "entry_norm_b"})
    for g in groups:
        g.pop("names")
    return torch.optim.AdamW(groups, lr=0.0, betas=cfg.optim.betas)


@torch.no_grad()
def predict(head: ProbeHead, feats: Mapping[str, torch.Tensor], chunk: int = 4096) -> torch.Tensor:
    head.eval()
    n = feats["target"].shape[0]
    return torch.cat([head({k: v[i:i + chunk] for k, v in feats.items()}) for i in range(0, n, chunk)]).cpu()


def train_heads(heads: Mapping[str, ProbeHead], train: Mapping[str, torch.Tensor], test: Mapping[str, torch.Tensor],
                cfg: ProbeConfig, multi_label: bool, log: MetricsLog) -> dict[str, list[dict[str, Any]]]:
    """Train every head on the cached features; returns each head's per-epoch records (evaluated epochs)."""
    n, bs = train["target"].shape[0], min(cfg.data.batch_size, train["target"].shape[0])
    steps = math.ceil(n / bs)
    sched = make_schedule(cfg.optim, steps, bs)
    kind = loss_kind(cfg.loss, multi_label)
    opts = {name: _adamw(h, cfg) for name, h in heads.items()}
    g = torch.Generator().manual_seed(cfg.runtime.seed)
    device = train["target"].device
    no_scaling = torch.amp.GradScaler(device.type, enabled=False)  # heads train in fp32 on cached features
    history: dict[str, list[dict[str, Any]]] = {name: [] for name in heads}
    step = 0
    for epoch in range(cfg.optim.epochs):
        order = torch.randperm(n, generator=g).split(bs)
        sums = {name: torch.zeros((), device=train["target"].device) for name in heads}
        for idx in order:
            lr = cosine_lr(step, sched)
            batch = {k: v[idx.to(v.device)] for k, v in train.items()}
            for name, head in heads.items():
                head.train()
                set_lr(opts[name], lr)
                out = optimizer_step(split_batch(batch, cfg.optim.accum_steps),
                                     lambda mb, h=head: {"loss": task_loss(h(mb), mb["target"], kind)}, opts[name],
                                     no_scaling, head.parameters(), device=device, dtype=torch.float32,
                                     grad_clip=cfg.optim.grad_clip)
                sums[name] += out["loss"]
            step += 1
        last = epoch == cfg.optim.epochs - 1
        for name, head in heads.items():
            rec: dict[str, Any] = {"kind": "epoch", "epoch": epoch + 1, "step": step, "head": name, "lr": lr,
                                   "train_loss": float(sums[name]) / len(order)}
            if not math.isfinite(rec["train_loss"]):
                raise FloatingPointError(f"probe head {name}: non-finite training loss at epoch {epoch + 1}")
            in_tail = epoch >= cfg.optim.epochs - cfg.average_last
            if last or in_tail or (epoch + 1) % max(cfg.eval_every, 1) == 0:
                rec.update({f"test_{k}": v for k, v in task_metrics(predict(head, test), test["target"].cpu(),
                                                                     multi_label, cfg.eer).items()})
                history[name].append(rec)
            log.write(rec)
    return history


def summarise(history: Mapping[str, list[dict[str, Any]]], cfg: ProbeConfig | FinetuneConfig, multi_label: bool,
              task: str) -> list[dict[str, Any]]:
    """One result per head: the last epoch; plus the best-on-test epoch, labelled, when ``report_best``."""
    metric = primary_metric(multi_label, cfg.eer)
    lower_is_better = metric == "eer"
    rows = []
    for name, recs in history.items():
        last = recs[-1]
        row = {"task": task, "head": name, "metric": metric, "value": last[f"test_{metric}"],
               "selection": "last_epoch", "epoch": last["epoch"],
               "metrics": {k[5:]: v for k, v in last.items() if k.startswith("test_")}}
        k = getattr(cfg, "average_last", 1)
        if k > 1:  # every one of the last k epochs is evaluated (train_heads); their mean is the reported value
            tail = [r for r in recs if r["epoch"] > last["epoch"] - k]
            row.update(value=float(np.mean([r[f"test_{metric}"] for r in tail])), selection=f"mean_last_{len(tail)}")
        if cfg.report_best:
            best = (min if lower_is_better else max)(recs, key=lambda r: r[f"test_{metric}"])
            row["best_on_test"] = {"value": best[f"test_{metric}"], "epoch": best["epoch"], "label": BEST_LABEL}
        rows.append(row)
    return rows


# -------------------------------------------------------------------------------------------------------- runs

def load_encoder(encoder: AudioMosaic | str | Path, cfg: ProbeConfig, random_init: bool = False) -> AudioMosaic:
    """A model instance, a checkpoint path (any format of ``checkpoint.load_any``), or ``"random"`` (a random
    ``cfg.encoder``). ``random_init`` keeps the architecture and re-draws the weights from ``runtime.seed``."""
    if isinstance(encoder, (str, Path)) and str(encoder) == "random":
        size = {"spec_size": (cfg.frontend.target_frames, cfg.frontend.num_mel_bins)}
        encoder, random_init = AudioMosaic(apply_overrides(cfg.encoder, size), projector=False), True
    model = load_any(encoder) if isinstance(encoder, (str, Path)) else encoder
    if random_init:
        torch.manual_seed(cfg.runtime.seed)
        model = AudioMosaic(model.cfg, projector=False)
    return model


def _features(model: AudioMosaic, train_m: Manifest, test_m: Manifest, cfg: ProbeConfig, device: torch.device,
              run_dir: Path, source: str, resume: bool) -> tuple[dict, dict]:
    """Pooled features of both splits, from ``run_dir/features.pt`` on resume when they match this run."""
    keys = ("mean", "norm_mean") if "attentive" in cfg.heads else ("mean",)
    tag = {"frontend": to_dict(cfg.frontend), "data": to_dict(cfg.data), "source": source, "keys": list(keys),
           "n": [len(train_m), len(test_m)]}
    path = run_dir / "features.pt"
    if resume and path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("tag") == tag:
            return saved["train"], saved["test"]
        print(f"probe: {path} was made with other settings; extracting again", file=sys.stderr)
    model = model.to(device)
    train = extract_features(model, train_m, cfg, device, keys)
    test = extract_features(model, test_m, cfg, device, keys)
    torch.save({"tag": tag, "train": train, "test": test}, path)
    return train, test


def run_probe(cfg: ProbeConfig, encoder: AudioMosaic | str | Path, run_dir: str | Path, *,
              train: Manifest | None = None, test: Manifest | None = None, resume: bool = False,
              random_init: bool = False) -> dict[str, Any]:
    """Probe a frozen encoder on one task.

    Args:
        cfg: the probe configuration.
        encoder: a model, a checkpoint path, or ``"random"``.
        run_dir: output folder (config.json, metrics.jsonl, results.json, features.pt).
        train, test: explicit manifests (default: :func:`task_manifests` of ``cfg.data``).
        resume: reuse ``features.pt`` and restart the head training (heads are never checkpointed).
        random_init: same architecture, random weights (the random-init baseline).
    Returns:
        ``{"task", "checkpoint", "multi_label", "loss", "n_train", "n_test", "lr", "results": [one per head]}``.
    """
    seed_everything(cfg.runtime.seed)
    device = resolve_device(cfg.runtime.device)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if train is None or test is None:
        train, test = task_manifests(cfg.data)
    multi_label = is_multi_label(train, test)
    source = "random" if random_init or str(encoder) == "random" else (
        str(encoder) if isinstance(encoder, (str, Path)) else "in-memory model")
    model = load_encoder(encoder, cfg, random_init)
    bs = cfg.data.batch_size
    derived = {"checkpoint": source, "task": train.name, "multi_label": multi_label,
               "loss": loss_kind(cfg.loss, multi_label), "lr": make_schedule(cfg.optim, 1, bs).base_lr,
               "global_batch": bs, "encoder": to_dict(model.cfg), "config_hash": config_hash(cfg)}
    write_config(run_dir, cfg, derived)
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)  # heads always retrain from scratch
    tr, te = _features(model, train, test, cfg, device, run_dir, source, resume)
    tr = {k: v.to(device) for k, v in tr.items()}
    te = {k: v.to(device) for k, v in te.items()}
    specs = head_specs(cfg, len(model.blocks))
    heads = {name: build_head(kind, entry, model, train.num_classes, cfg.runtime.seed).to(device)
             for name, (kind, entry) in specs.items()}
    log = MetricsLog(run_dir / "metrics.jsonl")
    task = task_name(cfg.data, train)
    rows = summarise(train_heads(heads, tr, te, cfg, multi_label, log), cfg, multi_label, task)
    for row in rows:
        log.write({"kind": "result", **row})
    out = {**{k: derived[k] for k in ("checkpoint", "multi_label", "loss", "lr")}, "task": task,
           "n_train": int(tr["target"].shape[0]), "n_test": int(te["target"].shape[0]), "results": rows}
    write_json_atomic(run_dir / "results.json", out)
    return out


def probe_random_init(cfg: ProbeConfig, like: AudioMosaic | str | Path, run_dir: str | Path,
                      **kwargs: Any) -> dict[str, Any]:
    """The random-init baseline: the architecture of ``like`` with fresh weights drawn from ``runtime.seed``."""
    return run_probe(cfg, like, run_dir, random_init=True, **kwargs)


def linear_probe_tasks(encoder: AudioMosaic | str | Path, corpus: str | Path, tasks: Sequence[str],
                       preset: str = "cpu", run_root: str | Path | None = None,
                       overrides: Mapping[str, Any] | None = None, random_init: bool = False
                       ) -> list[dict[str, Any]]:
    """Linear-probe one encoder on several tasks of a built corpus; one table row per task (and head).

    Example: ``linear_probe_tasks("runs/pretrain/model.safetensors", "data/built/default", ["kws35", "inst11"])``.
    """
    root = Path(run_root) if run_root is not None else default_run_dir("probe", preset)
    rows = []
    for task in tasks:
        cfg = resolve(preset, {**dict(overrides or {}), "data.root": str(corpus), "data.task": task},
                      presets=PROBE_PRESETS, cls=ProbeConfig)
        res = run_probe(cfg, encoder, root / task, random_init=random_init)
        rows += [{**r, "checkpoint": res["checkpoint"], "run_dir": str(root / task)} for r in res["results"]]
    return rows


def format_results(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table of result rows (last epoch, plus best-on-test when present)."""
    lines = [f"{'task':12s} {'head':18s} {'metric':9s} {'last':>8s}  best-on-test"]
    for r in rows:
        best = r.get("best_on_test")
        extra = f"{best['value']:.4f} (epoch {best['epoch']})" if best else "-"
        lines.append(f"{r['task']:12s} {r['head']:18s} {r['metric']:9s} {r['value']:8.4f}  {extra}")
    return "\n".join(lines)
