"""End-to-end fine-tuning (docs/method.md §8): the authors' recipe on any labelled task, one process.

Per training step, batched on the device, in the authors' order: roll-mag of each waveform, waveform mixup
(probability ``mixup``, lam ~ Beta(10, 10), partner uniform among the other clips of the batch, labels mixed by
lam), fbank, SpecAugment (one frequency and one time band), then a token mask that drops whole time columns and
frequency rows of the true grid (:func:`audiomosaic.masking.time_freq_mask`). AdamW with BEiT layer-wise lr decay,
lr = blr x global batch / 256, per-step warmup + cosine. Evaluation on the test split every ``eval_every`` epochs;
the LAST epoch is reported (docs/method.md Decision 5), the best-on-test epoch only with ``report_best``, labelled so.
With ``dev_manifest`` / ``test_sets`` (EnvSDD-style spoof detection, :mod:`audiomosaic.train.spoof`) the per-epoch
evaluation reads the dev split only, the best epoch is chosen on it, and the test sets are read once at the end.

``head="aasist"`` swaps the linear head for the AASIST graph back-end over all final tokens
(:class:`audiomosaic.aasist.AudioMosaicAASIST`, parameters under ``aasist.``, which layer decay gives the top lr).

Every random draw of a step comes from a generator seeded by (seed, step), and the data order from (seed, epoch),
so a run resumed from any checkpoint continues exactly as if it had not stopped.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader

from audiomosaic.aasist import AudioMosaicAASIST
from audiomosaic.augment.chain import roll_mag
from audiomosaic.augment.supervised import beta, mixup, spec_augment, spec_noise
from audiomosaic.config import EncoderConfig, FinetuneConfig, apply_overrides, config_changes, from_dict, to_dict
from audiomosaic.data import AudioDataset, Manifest, SkipCounter, collate
from audiomosaic.frontend import fbank_batch
from audiomosaic.masking import time_freq_mask
from audiomosaic.metrics import primary_metric, task_metrics
from audiomosaic.model import AudioMosaic
from audiomosaic.train.checkpoint import (
    list_resume,
    load_any,
    load_authors_state_dict,
    load_resume,
    save_resume,
    save_weights,
)
from audiomosaic.train.optim import build_adamw, cosine_lr, make_schedule, set_lr
from audiomosaic.train.probe import is_multi_label, loss_kind, summarise, task_loss, task_manifests, task_name
from audiomosaic.train.runlog import DeviceMeter, MetricsLog, progress_bar, write_config, write_json_atomic
from audiomosaic.train.runtime import (
    EpochBatchSampler,
    ResumableBatchSampler,
    autocast,
    derive_seed,
    grad_scaler,
    resolve_device,
    resolve_precision,
    seed_everything,
)
from audiomosaic.train.step import optimizer_step, split_batch

# ---------------------------------------------------------------------------------------------- sampling


def class_balanced_weights(targets: np.ndarray) -> np.ndarray:
    """Per-clip sampling weights: the sum over its labels of 1 / (label count + 0.01) (AudioMAE's weight file)."""
    counts = targets.sum(axis=0)
    return targets @ (1.0 / (counts + 0.01))


class WeightedEpochBatchSampler(ResumableBatchSampler):
    """``num_samples`` clips per epoch drawn with ``weights`` (WeightedRandomSampler's law), seeded by
    (seed, epoch) and cut into full batches; ``set_epoch(epoch, start)`` skips ``start`` batches (resume)."""

    def __init__(self, weights: np.ndarray, num_samples: int, batch_size: int, seed: int):
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.replacement = num_samples > int((self.weights > 0).sum())  # without replacement when possible
        if self.batches_per_epoch == 0:
            raise ValueError(f"{num_samples} samples per epoch cannot fill one batch of {batch_size}")
        self.epoch, self.start = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        idx = torch.multinomial(self.weights, self.num_samples, self.replacement,
                                generator=self.epoch_generator()).tolist()
        for b in range(self.start, self.batches_per_epoch):
            yield idx[b * self.batch_size:(b + 1) * self.batch_size]


# ---------------------------------------------------------------------------------------------------- model

def make_classifier(ecfg: EncoderConfig, cfg: FinetuneConfig, num_classes: int) -> AudioMosaic:
    """An uninitialised-from-checkpoint classifier of ``cfg.head``: ``linear`` (AudioMosaic + Linear head) or
    ``aasist`` (:class:`AudioMosaicAASIST`, two classes only).

    Raises:
        ValueError: ``head="aasist"`` on a task with other than two classes.
    """
    if cfg.head == "aasist":
        if num_classes != 2:
            raise ValueError(f"head='aasist' is a binary (spoof / bona fide) head; the task has {num_classes} classes")
        return AudioMosaicAASIST(ecfg, token_order=cfg.aasist_token_order)
    return AudioMosaic(ecfg, num_classes=num_classes, projector=False)


def num_outputs(model: AudioMosaic) -> int:
    """Logit count of a classifier of either head."""
    return 2 if isinstance(model, AudioMosaicAASIST) else model.head.out_features


def build_classifier(encoder: AudioMosaic | str | Path, cfg: FinetuneConfig, num_classes: int) -> AudioMosaic:
    """A classifier on (target_frames, num_mel_bins) inputs, initialised from ``encoder`` (a model, a checkpoint
    path, or ``"random"`` for ``cfg.encoder`` from scratch). The position table is resized to the input grid;
    the projector is dropped and the head starts at N(0, 2.5e-5) (linear) or at PyTorch's default init (AASIST,
    as the authors).

    Raises:
        ValueError: the checkpoint misses encoder weights the classifier needs (an architecture mismatch).
    """
    size = {"spec_size": (cfg.frontend.target_frames, cfg.frontend.num_mel_bins)}
    src = None
    if isinstance(encoder, (str, Path)) and str(encoder) != "random":
        src = load_any(encoder)
    elif isinstance(encoder, AudioMosaic):
        src = encoder
    ecfg = (apply_overrides(src.cfg, {**size, "drop_path_rate": cfg.encoder.drop_path_rate}) if src is not None
            else apply_overrides(cfg.encoder, size))
    seed_everything(cfg.runtime.seed)
    model = make_classifier(ecfg, cfg, num_classes)
    if src is not None:
        missing, _ = load_authors_state_dict(model, src.state_dict(), strict=False)
        lost = [k for k in missing if not k.startswith(("head.", "aasist."))]
        if lost:
            raise ValueError(f"the checkpoint lacks {len(lost)} encoder weights of the classifier, e.g. {lost[:3]}")
    return model


class Run:
    """Everything a fine-tuning step touches (built by :func:`setup`)."""

    def __init__(self, cfg: FinetuneConfig, model: AudioMosaic, loader: DataLoader, steps_per_epoch: int,
                 multi_label: bool):
        self.cfg, self.model, self.loader, self.multi_label = cfg, model, loader, multi_label
        self.device = resolve_device(cfg.runtime.device)
        self.dtype = resolve_precision(cfg.runtime.precision, self.device)
        self.model.to(self.device)
        if cfg.runtime.compile:
            self.model.compile()  # in place: state-dict keys stay clean
        self.optimizer = build_adamw(model, cfg.optim)
        self.scaler = grad_scaler(self.device, self.dtype)
        self.steps_per_epoch = steps_per_epoch
        self.schedule = make_schedule(cfg.optim, steps_per_epoch, cfg.data.batch_size, cfg.max_steps)
        self.loss_kind = loss_kind(cfg.loss, multi_label)
        cw = cfg.class_weights
        self.class_weights = torch.tensor(cw, device=self.device) if cw else None
        self.pad_value = -cfg.frontend.norm_mean / (2 * cfg.frontend.norm_std)  # log-mel 0 after normalisation
        self.step, self.history, self.meter = 0, [], DeviceMeter()


def train_step(r: Run, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One optimiser step on a batch of waveforms; returns device scalars (no host sync)."""
    cfg, dev = r.cfg, r.device
    g = torch.Generator().manual_seed(derive_seed(cfg.runtime.seed, r.step))
    torch.manual_seed(derive_seed(cfg.runtime.seed, r.step))  # drop path
    wav, lengths, target = batch["wav"].to(dev), batch["length"].to(dev), batch["target"].to(dev)
    if cfg.roll_mag:
        shift = (torch.rand(len(wav), generator=g).to(dev) * lengths).long()
        wav = roll_mag(wav, shift, beta(len(wav), 10.0, g) + 0.5, lengths)
    wav, target, lengths = mixup(wav, target, lengths, cfg.mixup, g)
    spec = spec_augment(fbank_batch(wav, cfg.frontend, lengths), cfg.freqm, cfg.timem, g, r.pad_value)
    if cfg.spec_noise:
        spec = spec_noise(spec, g)
    keep = None
    if cfg.mask_t_prob > 0 or cfg.mask_f_prob > 0:
        keep = time_freq_mask(len(wav), r.model.grid, cfg.mask_t_prob, cfg.mask_f_prob, g, dev)[0]
    set_lr(r.optimizer, cosine_lr(r.step, r.schedule))
    r.model.train()

    def forward(mb: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]) -> dict[str, torch.Tensor]:
        spec_mb, target_mb, keep_mb = mb
        return {"loss": task_loss(r.model(spec_mb, keep_mb), target_mb, r.loss_kind, r.class_weights)}

    out = optimizer_step(split_batch((spec, target, keep), cfg.optim.accum_steps), forward, r.optimizer, r.scaler,
                         r.model.parameters(), device=dev, dtype=r.dtype, grad_clip=cfg.optim.grad_clip)
    r.step += 1
    return {"loss": out["loss"]}


@torch.no_grad()
def evaluate(r: Run, loader: DataLoader) -> dict[str, float]:
    """Test-split metrics of the current model: no augmentation, no token masking."""
    r.model.eval()
    logits, targets = [], []
    for batch in loader:
        if len(batch["index"]) == 0:
            continue
        spec = fbank_batch(batch["wav"].to(r.device), r.cfg.frontend, batch["length"].to(r.device))
        with autocast(r.device, r.dtype):
            logits.append(r.model(spec).float().cpu())
        targets.append(batch["target"])
    return task_metrics(torch.cat(logits), torch.cat(targets), r.multi_label, r.cfg.eer)


def save_state(r: Run, run_dir: Path) -> None:
    state = {"model": r.model.state_dict(), "optimizer": r.optimizer.state_dict(), "scaler": r.scaler.state_dict(),
             "step": r.step, "config": to_dict(r.cfg), "encoder": to_dict(r.model.cfg),
             "num_classes": num_outputs(r.model), "history": r.history, "meter": r.meter.state_dict()}
    save_resume(state, run_dir, r.step, r.cfg.runtime.keep_ckpts)


def restore_state(r: Run, state: Mapping[str, Any]) -> None:
    """Continue from a :func:`save_state` checkpoint.

    Raises:
        ValueError: the checkpoint was written with another config.
    """
    diff = config_changes(state["config"], r.cfg)
    if diff:
        raise ValueError(f"{state['path']} was written with other settings (sections {diff}); use a new --run-dir")
    r.model.load_state_dict(state["model"])
    r.optimizer.load_state_dict(state["optimizer"])
    r.scaler.load_state_dict(state["scaler"])
    r.step, r.history = int(state["step"]), list(state["history"])
    r.meter.load_state_dict(state["meter"], r.device)


# ------------------------------------------------------------------------------------------------------ loop

def train_epoch(r: Run, epoch: int, run_dir: Path, log: MetricsLog, test_loader: DataLoader) -> None:
    """The rest of ``epoch`` (all of it unless resumed mid-epoch), then its log line, evaluation and checkpoint."""
    cfg = r.cfg
    r.loader.batch_sampler.set_epoch(epoch, r.step - epoch * r.steps_per_epoch)
    skips = SkipCounter()
    bar = progress_bar(len(r.loader), cfg.runtime.progress, desc=f"finetune epoch {epoch + 1}")
    for batch in r.loader:
        skips.update(batch)
        bar.update()
        if len(batch["index"]) == 0:
            r.step += 1  # nothing decodable: keep the step <-> (epoch, batch) alignment that resume relies on
        else:
            r.meter.add(train_step(r, batch))
        end = r.step >= r.schedule.total_steps
        if r.step % cfg.runtime.ckpt_every == 0 and r.step % r.steps_per_epoch and not end:
            save_state(r, run_dir)
        if end:
            break
    bar.close()
    loss = r.meter.read().get("loss", math.nan)
    if not math.isfinite(loss):
        raise FloatingPointError(f"non-finite training loss in epoch {epoch + 1}; lower optim.blr or check the data")
    rec: dict[str, Any] = {"kind": "epoch", "epoch": epoch + 1, "step": r.step,
                           "lr": cosine_lr(r.step - 1, r.schedule), "train_loss": loss, "skipped": skips.total}
    last = r.step >= r.schedule.total_steps
    if last or (epoch + 1) % max(cfg.eval_every, 1) == 0:
        rec.update({f"test_{k}": v for k, v in evaluate(r, test_loader).items()})
        if cfg.dev_manifest:  # ``test_loader`` is the dev split: keep the best epoch's weights
            keep_best(r, rec, run_dir)
    r.history.append(rec)
    log.write(rec)
    save_state(r, run_dir)


def keep_best(r: Run, rec: dict[str, Any], run_dir: Path) -> None:
    """Write ``best.safetensors`` when ``rec`` (an epoch evaluated on the dev split) beats every earlier evaluated
    epoch on the primary metric (EER: lower; ties keep the earlier epoch). Written before the epoch's checkpoint, so
    a resume that repeats the epoch rewrites the same weights."""
    metric = primary_metric(r.multi_label, r.cfg.eer)
    sign = 1.0 if metric == "eer" else -1.0
    earlier = [h[f"test_{metric}"] for h in r.history if f"test_{metric}" in h]
    if earlier and sign * rec[f"test_{metric}"] >= min(sign * v for v in earlier):
        return
    save_weights(r.model, run_dir / "best.safetensors",
                 meta={"frontend": to_dict(r.cfg.frontend), "head": r.cfg.head,
                       "token_order": r.cfg.aasist_token_order, "epoch": rec["epoch"],
                       "step": r.step, "selection": f"best dev {metric}", "dev_value": rec[f"test_{metric}"]})


def _loaders(cfg: FinetuneConfig, train: Manifest, test: Manifest, device: torch.device
             ) -> tuple[DataLoader, DataLoader]:
    clip = int(round(cfg.data.clip_seconds * cfg.frontend.sample_rate))
    ds = AudioDataset(train, cfg.frontend.sample_rate, clip)
    bs, seed = cfg.data.batch_size, cfg.runtime.seed
    if cfg.balanced_sampler:
        n = cfg.samples_per_epoch or len(ds)
        sampler = WeightedEpochBatchSampler(class_balanced_weights(train.targets()), n, bs, seed)
    else:
        sampler = EpochBatchSampler(len(ds), bs, seed)
    kw = dict(num_workers=cfg.data.num_workers, collate_fn=collate, pin_memory=device.type == "cuda")
    train_loader = DataLoader(ds, batch_sampler=sampler, persistent_workers=cfg.data.num_workers > 0, **kw)
    test_loader = DataLoader(AudioDataset(test, cfg.frontend.sample_rate, clip), batch_size=bs, **kw)
    return train_loader, test_loader


def _derived(r: Run, source: str, train: Manifest, test: Manifest) -> dict[str, Any]:
    s, grid = r.schedule, r.model.grid
    keep = time_freq_mask(1, grid, r.cfg.mask_t_prob, r.cfg.mask_f_prob)[0].shape[1]
    return {"checkpoint": source, "lr": s.base_lr, "global_batch": r.cfg.data.batch_size, "world_size": 1,
            "steps_per_epoch": r.steps_per_epoch, "total_steps": s.total_steps, "warmup_steps": s.warmup_steps,
            "n_train": len(train), "n_test": len(test), "num_classes": train.num_classes,
            "multi_label": r.multi_label, "loss": r.loss_kind, "grid": list(grid), "train_tokens": keep,
            "encoder": to_dict(r.model.cfg), "device": str(r.device)}


def finetune_task(cfg: FinetuneConfig, encoder: AudioMosaic | str | Path | None, run_dir: str | Path,
                  train: Manifest, test: Manifest, resume: bool = False) -> dict[str, Any]:
    """Fine-tune on one (train, test) split; writes config.json, metrics.jsonl, checkpoints, model.safetensors
    and results.json in ``run_dir``.

    Raises:
        ValueError: ``run_dir`` holds checkpoints but ``resume`` is False, or nothing to resume from without
            an encoder, or a checkpoint written with other settings.
    """
    run_dir = Path(run_dir)
    if not resume and list_resume(run_dir):
        raise ValueError(f"{run_dir} already holds checkpoints; pass --resume or choose another --run-dir")
    state = load_resume(run_dir) if resume else None
    if state is None and encoder is None:
        raise ValueError(f"nothing to resume in {run_dir}; give --checkpoint")
    multi_label = is_multi_label(train, test)
    if state is not None:
        model = make_classifier(from_dict(EncoderConfig, state["encoder"]), cfg, state["num_classes"])
    else:
        model = build_classifier(encoder, cfg, train.num_classes)
    device = resolve_device(cfg.runtime.device)
    train_loader, test_loader = _loaders(cfg, train, test, device)
    r = Run(cfg, model, train_loader, train_loader.batch_sampler.batches_per_epoch, multi_label)
    log = MetricsLog(run_dir / "metrics.jsonl")
    if state is not None:
        restore_state(r, state)
        log.truncate(r.step)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    source = str(encoder) if isinstance(encoder, (str, Path)) else "in-memory model"
    write_config(run_dir, cfg, _derived(r, source, train, test))
    for epoch in range(r.step // r.steps_per_epoch, math.ceil(r.schedule.total_steps / r.steps_per_epoch)):
        train_epoch(r, epoch, run_dir, log, test_loader)
    evaluated = [h for h in r.history if any(k.startswith("test_") for k in h)]
    task = task_name(cfg.data, train)
    row = summarise({"finetune": evaluated}, cfg, multi_label, task)[0]
    row.pop("head")
    log.write({"kind": "result", "step": r.step, **row})  # a step, so a resume's truncate drops it
    save_weights(model, run_dir / "model.safetensors",
                 meta={"frontend": to_dict(cfg.frontend), "classes": train.classes, "result": row, "head": cfg.head,
                       "token_order": cfg.aasist_token_order})
    out = {**row, "lr": r.schedule.base_lr, "n_train": len(train), "n_test": len(test), "run_dir": str(run_dir)}
    write_json_atomic(run_dir / "results.json", out)
    return out


def run_finetune(cfg: FinetuneConfig, encoder: AudioMosaic | str | Path | None, run_dir: str | Path, *,
                 train: Manifest | None = None, test: Manifest | None = None, resume: bool = False) -> dict[str, Any]:
    """Fine-tune on the configured task, or on each of ``cfg.folds`` (ESC-50: ``data.manifest`` = its root) and
    average the folds' last-epoch metric. ``encoder``: a model, a checkpoint path, ``"random"`` (from scratch)
    or None (resume only)."""
    run_dir = Path(run_dir)
    if cfg.dev_manifest or cfg.test_sets:
        from audiomosaic.train.spoof import run_sets  # imports this module

        return run_sets(cfg, encoder, run_dir, train=train, resume=resume)
    if not cfg.folds:
        if train is None or test is None:
            train, test = task_manifests(cfg.data)
        return finetune_task(cfg, encoder, run_dir, train, test, resume)
    if train is not None or not (Path(cfg.data.manifest) / "meta" / "esc50.csv").is_file():
        raise ValueError("folds need data.manifest set to an ESC-50 root (meta/esc50.csv); got "
                         f"{cfg.data.manifest!r}")
    per = [finetune_task(cfg, encoder, run_dir / f"fold{k}", *task_manifests(cfg.data, fold=k), resume=resume)
           for k in cfg.folds]
    out = {"task": per[0]["task"], "metric": per[0]["metric"], "value": float(np.mean([p["value"] for p in per])),
           "selection": "last_epoch, mean over folds", "folds": {str(k): p for k, p in zip(cfg.folds, per)}}
    write_config(run_dir, cfg, {"folds": list(cfg.folds), "checkpoint": str(encoder)})
    write_json_atomic(run_dir / "results.json", out)
    return out
