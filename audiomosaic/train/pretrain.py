"""Pre-training (docs/method.md §7); the command line is :mod:`audiomosaic.cli.pretrain`.

``objective=contrastive`` (AudioMosaic) is described below. ``objective=mae`` is the generative baseline the paper
argues against, trained by the same loop on the same data: one augmented view per clip, an unstructured mask of
``mae.mask_ratio``, a light decoder and the MSE of normalised masked patches (:mod:`audiomosaic.mae`); only the
encoder is exported, so probes and fine-tuning read both kinds of run alike.

A step: the DataLoader only decodes waveforms; on the training device the batch becomes two augmented views
(:func:`audiomosaic.augment.chain.two_view_fbank`), each view gets its mask (time columns vs frequency rows,
:func:`audiomosaic.masking.view_masks`), the encoder + projector run on the visible tokens, and NT-Xent is taken over
the global batch (negatives all-gathered from every rank, with gradients). AdamW follows a per-step warmup + cosine
lr. Every random draw of a step comes from the per-rank ``generator`` or torch's global RNG (both checkpointed), and
the data order is a seeded per-epoch permutation, so a resumed run repeats the uninterrupted one; bitwise on CPU
with ``runtime.deterministic`` (the smoke and cpu presets; see :func:`audiomosaic.train.runtime.backend_settings`).
"""
from __future__ import annotations

import math
import os
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from audiomosaic.augment.chain import two_view_fbank, views_fbank
from audiomosaic.config import DataConfig, PretrainConfig, config_changes, to_dict
from audiomosaic.data import build, load_manifest, load_onthefly
from audiomosaic.data.dataset import AudioDataset, collate
from audiomosaic.data.onthefly import UnlabelledClips, onthefly_names
from audiomosaic.losses import contrastive_accuracy, nt_xent_logits
from audiomosaic.mae import DecoderConfig, MaskedAutoencoder
from audiomosaic.masking import view_masks
from audiomosaic.model import AudioMosaic, param_count
from audiomosaic.paths import data_dir
from audiomosaic.train.checkpoint import list_resume, load_resume, save_resume, save_weights
from audiomosaic.train.dist import DistInfo, all_reduce_mean, gather_with_grad, init_distributed, print0
from audiomosaic.train.optim import Schedule, build_adamw, cosine_lr, make_schedule, set_lr
from audiomosaic.train.runlog import (
    DeviceMeter,
    MetricsLog,
    capture_rng,
    progress_bar,
    read_metrics,
    restore_rng,
    write_config,
)
from audiomosaic.train.runtime import (
    EpochBatchSampler,
    backend_settings,
    convert_sync_batchnorm,
    derive_seed,
    grad_scaler,
    resolve_device,
    resolve_precision,
    seed_everything,
)
from audiomosaic.train.step import optimizer_step, split_batch


class TwoViews(nn.Module):
    """Both masked views in one forward, so DDP sees exactly one forward per backward. Returns (z_a, z_b)."""

    def __init__(self, model: AudioMosaic):
        super().__init__()
        self.model = model

    def forward(self, spec_a: torch.Tensor, keep_a: torch.Tensor, spec_b: torch.Tensor,
                keep_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Separate calls: the views keep different token counts, and each projector BN sees one view
        # (docs/method.md §4).
        return self.model(spec_a, keep_a), self.model(spec_b, keep_b)


def contrastive_loss(model: nn.Module, spec_a: torch.Tensor, keep_a: torch.Tensor, spec_b: torch.Tensor,
                     keep_b: torch.Tensor, tau: float, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent of a (possibly DDP-wrapped) :class:`TwoViews` over the global batch (docs/method.md §6).

    Args:
        spec_a, spec_b: (n, 1, T, F) local views; keep_a, keep_b: (n, n_keep) visible-token indices.
        offset: rank * n, this rank's first row in the gathered batch.
    Returns:
        (loss, top1): the local symmetric loss (DDP's gradient averaging makes it the global one) and the
        contrastive top-1 accuracy, both 0-d tensors.
    """
    z_a, z_b = model(spec_a, keep_a, spec_b, keep_b)
    logits, target = nt_xent_logits(z_a, z_b, tau, gather_with_grad, offset)
    return F.cross_entropy(logits, target), contrastive_accuracy(logits.detach(), target)


@dataclass
class Trainer:
    """Everything a step needs, plus the run's position (``step``) and its logging window."""

    cfg: PretrainConfig
    model: nn.Module  # what a step calls: TwoViews or MaskedAutoencoder, DDP-wrapped when world > 1
    raw: AudioMosaic  # the bare encoder (possibly compiled in place): exported as encoder.safetensors
    trained: nn.Module  # every trained weight (raw, or raw + MAE decoder): resume checkpoints and the optimiser
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: Schedule
    generator: torch.Generator  # augmentation and masks, one stream per rank
    device: torch.device
    dtype: torch.dtype
    info: DistInfo
    step: int = 0
    skipped: int = 0  # unreadable files met by this rank in the current epoch
    first_attempt: bool = True  # neither resumed nor restarted by torchrun (runtime.fail_at_step)
    meter: DeviceMeter = field(default_factory=DeviceMeter)
    window: list[float] = field(default_factory=lambda: [time.perf_counter(), 0.0])  # (start, clips)
    t0: float = field(default_factory=time.perf_counter)


def make_views(t: Trainer, wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(n, S) waveforms -> spec_a, keep_a, spec_b, keep_b: augmented fbanks (n, 1, T, F) and their masks."""
    with torch.no_grad():
        spec_a, spec_b = two_view_fbank(wav, t.cfg.augment, t.cfg.frontend, t.generator, lengths)
    m = t.cfg.mask
    (keep_a, _, _), (keep_b, _, _) = view_masks(
        m.mode, wav.shape[0], t.raw.grid, ratio_time=m.ratio_time, ratio_freq=m.ratio_freq, ratio=m.ratio,
        layout=m.layout, generator=t.generator, device=t.device)
    return spec_a, keep_a, spec_b, keep_b


def one_view(t: Trainer, wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(n, S) waveforms -> (n, 1, T, F): one augmented view per clip, with view A's parameters of the contrastive
    runs' draws (the masked-reconstruction objective sees one view)."""
    return views_fbank(wav, t.cfg.augment, t.cfg.frontend, t.generator, lengths, n=1)


def random_window(wav: torch.Tensor, lengths: torch.Tensor, clip: int, generator: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, S) zero-padded waveforms of ``lengths`` -> (n, clip) windows at uniform random offsets within each
    clip (offset 0 for clips no longer than ``clip``), with their new lengths. No host sync."""
    span = (lengths - clip).clamp(min=0)
    u = torch.rand(wav.shape[0], generator=generator, device=generator.device).to(wav.device)
    offset = (u * (span + 1)).long().clamp(max=span)
    idx = offset[:, None] + torch.arange(clip, device=wav.device)[None]
    if wav.shape[1] < clip:  # every file shorter than the window: pad
        wav = torch.nn.functional.pad(wav, (0, clip - wav.shape[1]))
    return wav.gather(1, idx.clamp(max=wav.shape[1] - 1)) * (idx < lengths[:, None]), lengths.clamp(max=clip)


def train_step(t: Trainer, wav: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
    """One optimiser step on a local batch (n, S), split into ``optim.accum_steps`` micro-batches.

    Returns device tensors (no host sync): ``loss``, ``top1`` (means over micro-batches), ``grad_norm``.
    """
    set_lr(t.optimizer, cosine_lr(t.step, t.schedule))
    if t.cfg.data.random_crop:
        clip = int(round(t.cfg.data.clip_seconds * t.cfg.frontend.sample_rate))
        wav, lengths = random_window(wav, lengths, clip, t.generator)

    def forward(views: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        loss, top1 = contrastive_loss(t.model, *views, t.cfg.tau, t.info.rank * views[0].shape[0])
        return {"loss": loss, "top1": top1}

    def reconstruct(spec: torch.Tensor) -> dict[str, torch.Tensor]:
        out = t.model(spec, t.generator)
        return {"loss": out["loss"], "baseline": out["baseline"]}

    mae = t.cfg.objective == "mae"
    return optimizer_step(split_batch((wav, lengths), t.cfg.optim.accum_steps), reconstruct if mae else forward,
                          t.optimizer, t.scaler, t.trained.parameters(), device=t.device, dtype=t.dtype,
                          grad_clip=t.cfg.optim.grad_clip,
                          prepare=(lambda mb: one_view(t, *mb)) if mae else (lambda mb: make_views(t, *mb)),
                          ddp=t.model if isinstance(t.model, DDP) else None)


def fill_batch(wav: torch.Tensor, lengths: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat usable clips when files were skipped: every rank must bring ``size`` clips to the all-gather.

    Raises:
        ValueError: no file of the batch could be read.
    """
    if wav.shape[0] == size:
        return wav, lengths
    if wav.shape[0] == 0:
        raise ValueError(f"none of the {size} files of a batch could be read; check the manifest with "
                         "`python -m audiomosaic data check`")
    idx = torch.arange(size) % wav.shape[0]
    return wav[idx], lengths[idx]


def train_one_epoch(t: Trainer, loader: torch.utils.data.DataLoader, epoch: int, run_dir: Path,
                    log: MetricsLog) -> dict[str, Any]:
    """Steps over the rest of an epoch (or up to the schedule's end): log, checkpoint, maybe fail on purpose.

    Returns the last logged record (empty if nothing was logged).
    """
    rt, last = t.cfg.runtime, {}
    bar = progress_bar(len(loader), rt.progress and t.info.is_main, desc=f"epoch {epoch}")
    for batch in loader:
        t.skipped += len(batch["skipped"])
        wav, lengths = fill_batch(batch["wav"], batch["length"], t.cfg.data.batch_size)
        out = train_step(t, wav.to(t.device, non_blocking=True), lengths.to(t.device, non_blocking=True))
        t.step += 1
        t.meter.add(out)
        t.window[1] += t.cfg.data.batch_size * t.info.world_size
        done = t.step >= t.schedule.total_steps
        if t.step % rt.log_every == 0 or done:
            last = log_window(t, epoch, log)
            bar.set_postfix({k: f"{last[k]:.4f}" for k in ("loss", "top1", "baseline") if k in last}, refresh=False)
        if t.step % rt.ckpt_every == 0 or done:
            save_checkpoint(t, epoch, run_dir)
        if rt.export_every and t.step % rt.export_every == 0 and t.info.is_main:
            save_weights(t.raw, run_dir / f"encoder-step{t.step:06d}.safetensors",
                         {"frontend": to_dict(t.cfg.frontend), "pretrain": to_dict(t.cfg), "step": t.step})
        if t.step == rt.fail_at_step and t.first_attempt and t.info.rank == t.info.world_size - 1:
            os.kill(os.getpid(), signal.SIGKILL)  # elastic-restart tests only
        bar.update()
        if done:
            break
    bar.close()
    return last


def log_window(t: Trainer, epoch: int, log: MetricsLog) -> dict[str, Any]:
    """Write one metrics.jsonl record: window means over every rank. The step's only host synchronisation.

    Raises:
        FloatingPointError: the loss was not finite at some step of the window.
    """
    values = t.meter.read(reduce=all_reduce_mean, totals={"skipped": float(t.skipped)})
    if not math.isfinite(values["loss"]):
        raise FloatingPointError(f"non-finite loss ({values['loss']}) within the {t.cfg.runtime.log_every} steps "
                                 f"before step {t.step}; lower optim.lr or check the data")
    now = time.perf_counter()
    stats = {k: values[k] for k in ("loss", "top1", "baseline") if k in values}  # baseline: predict-the-mean MSE
    record = {"step": t.step, "epoch": epoch, **stats,
              "lr": cosine_lr(t.step - 1, t.schedule), "grad_norm": values["grad_norm"],
              "skipped": round(values["skipped"] * t.info.world_size),
              "clips_per_s": t.window[1] / max(now - t.window[0], 1e-9), "time": now - t.t0}
    t.window[:] = [now, 0.0]
    log.write(record)
    return record


# ------------------------------------------------------------------------------------------ checkpoints

def save_checkpoint(t: Trainer, epoch: int, run_dir: Path) -> None:
    """Resume state: model, optimizer, scaler, step, config and, per rank, every RNG and the logging window."""
    local = {"rng": capture_rng({"augment": t.generator}), "meter": t.meter.state_dict(), "skipped": t.skipped}
    ranks = [local]
    if t.info.enabled:  # a collective: every rank takes part, rank 0 writes
        ranks = [None] * t.info.world_size if t.info.is_main else None
        dist.gather_object(local, ranks, dst=0)
    if t.info.is_main:
        state = {"model": t.trained.state_dict(), "optimizer": t.optimizer.state_dict(),
                 "scaler": t.scaler.state_dict(), "step": t.step, "epoch": epoch, "config": to_dict(t.cfg),
                 "world_size": t.info.world_size, "ranks": ranks}
        save_resume(state, run_dir, t.step, t.cfg.runtime.keep_ckpts)


def restore(t: Trainer, state: dict[str, Any]) -> None:
    """Load a :func:`save_checkpoint` state into ``t`` (RNG and window only with the same world size)."""
    changed = config_changes(state["config"], t.cfg)
    if changed:
        warnings.warn(f"config sections {changed} differ from the checkpoint's ({state['path']})", stacklevel=2)
    t.trained.load_state_dict(state["model"])
    t.optimizer.load_state_dict(state["optimizer"])
    t.scaler.load_state_dict(state["scaler"])
    t.step = int(state["step"])
    if state["world_size"] != t.info.world_size:
        warnings.warn(f"checkpoint written by {state['world_size']} ranks, resuming on {t.info.world_size}: "
                      "random streams restart from the seed", stacklevel=2)
        t.generator.manual_seed(derive_seed(t.cfg.runtime.seed, t.step, t.info.rank))
        return
    local = state["ranks"][t.info.rank]
    restore_rng(local["rng"], {"augment": t.generator})
    t.meter.load_state_dict(local["meter"], t.device)
    t.skipped = int(local["skipped"])


# ----------------------------------------------------------------------------------------------- set-up

def pretrain_dataset(cfg: PretrainConfig, info: DistInfo) -> torch.utils.data.Dataset:
    """AudioDataset over ``data.manifest`` or ``<corpus>/pretrain.json``, building the corpus when needed, plus the
    train splits of the corpus' render-on-the-fly sets named by ``data.onthefly``."""

    path = Path(cfg.data.manifest) if cfg.data.manifest else None
    root = Path(cfg.data.root) if cfg.data.root else data_dir(cfg.data.recipe)
    if path is None:
        if not cfg.data.root and info.is_main:
            build(cfg.data.recipe, root, seed=0, progress=cfg.runtime.progress)  # reused when already built
        if info.enabled:
            dist.barrier()
        path = root / "pretrain.json"
    if not path.exists():
        raise ValueError(f"pre-training manifest {path} not found; set data.root to a built corpus or data.manifest")
    clip = int(round(cfg.data.clip_seconds * cfg.frontend.sample_rate))
    # random_crop: whole files; train_step cuts the window (its draws are checkpointed, a worker's are not)
    ds = AudioDataset(load_manifest(path), cfg.frontend.sample_rate,
                      clip_samples=None if cfg.data.random_crop else clip)
    if not cfg.data.onthefly:
        return ds
    parts: list[torch.utils.data.Dataset] = [ds]
    # rendered in the workers: too big to store (docs/data.md §3c)
    for name in onthefly_names(root, cfg.data.onthefly):
        parts.append(UnlabelledClips(load_onthefly(root / "onthefly" / f"{name}.json", "train"), clip,
                                     sum(len(p) for p in parts)))
    return torch.utils.data.ConcatDataset(parts)


def make_loader(ds: torch.utils.data.Dataset, data: DataConfig, seed: int, info: DistInfo,
                device: torch.device) -> torch.utils.data.DataLoader:
    """Workers decode only. The loader's own generator keeps worker seeding off torch's global RNG."""

    sampler = EpochBatchSampler(len(ds), data.batch_size, seed, info.rank, info.world_size)
    return torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=data.num_workers, collate_fn=collate,
                                       pin_memory=device.type == "cuda", persistent_workers=data.num_workers > 0,
                                       generator=torch.Generator())


def build_trainer(cfg: PretrainConfig, info: DistInfo, steps_per_epoch: int) -> Trainer:
    """Model (SyncBN across ranks, compiled, DDP), AdamW, scaler, schedule and the per-rank generator."""
    device = resolve_device(cfg.runtime.device, info.local_rank)
    dtype = resolve_precision(cfg.runtime.precision, device)
    seed_everything(cfg.runtime.seed)  # the same initial weights on every rank
    if cfg.objective == "mae":
        m = cfg.mae
        trained: nn.Module = MaskedAutoencoder(cfg.encoder, DecoderConfig(
            m.decoder_dim, m.decoder_depth, m.decoder_heads, m.decoder_mlp_ratio, m.norm_pix_loss), m.mask_ratio)
        raw = trained.encoder
        # Paired arms: the encoder starts from the contrastive run's initial weights of the same seed.
        seed_everything(cfg.runtime.seed)
        paired = AudioMosaic(cfg.encoder).state_dict()
        raw.load_state_dict({k: v for k, v in paired.items() if not k.startswith("projector.")})
        raw.fc_norm.requires_grad_(False)  # only normalises pooled features: no gradient under reconstruction
    else:
        raw = trained = AudioMosaic(cfg.encoder)
        if info.enabled:
            raw = trained = convert_sync_batchnorm(raw, device)  # projector BNs see the global batch (§4, sync_bn)
    trained.to(device)
    optimizer = build_adamw(trained, cfg.optim)
    if cfg.runtime.compile:
        raw.compile()  # in place: state-dict keys stay clean
    model: nn.Module = trained if cfg.objective == "mae" else TwoViews(raw)
    if info.enabled:
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    seed_everything(cfg.runtime.seed + info.rank)  # drop path differs between ranks
    generator = torch.Generator(device=device).manual_seed(derive_seed(cfg.runtime.seed, info.rank))
    global_batch = cfg.data.batch_size * info.world_size
    schedule = make_schedule(cfg.optim, steps_per_epoch, global_batch, cfg.max_steps)
    return Trainer(cfg, model, raw, trained, optimizer, grad_scaler(device, dtype), schedule, generator, device, dtype,
                   info)


def derived_values(t: Trainer, num_clips: int, steps_per_epoch: int) -> dict[str, Any]:
    """What config.json records next to the config: the pure consequences of config + data + world size."""
    s = t.schedule
    if t.cfg.objective == "mae":
        visible = [math.floor(t.raw.num_tokens * (1 - t.cfg.mae.mask_ratio))]  # as masking.unstructured_mask
    else:
        (ka, _, _), (kb, _, _) = view_masks(t.cfg.mask.mode, 1, t.raw.grid, ratio_time=t.cfg.mask.ratio_time,
                                            ratio_freq=t.cfg.mask.ratio_freq, ratio=t.cfg.mask.ratio,
                                            layout=t.cfg.mask.layout)
        visible = [ka.shape[1], kb.shape[1]]
    return {"lr": s.base_lr, "min_lr": s.min_lr, "total_steps": s.total_steps, "warmup_steps": s.warmup_steps,
            "steps_per_epoch": steps_per_epoch, "epochs": math.ceil(s.total_steps / steps_per_epoch),
            "global_batch": t.cfg.data.batch_size * t.info.world_size, "world_size": t.info.world_size,
            "num_clips": num_clips, "grid": list(t.raw.grid), "tokens_per_view": visible,
            "params": param_count(t.raw), "objective": t.cfg.objective, "device": str(t.device),
            "dtype": str(t.dtype).replace("torch.", "")}


def restarted() -> bool:
    """True in a worker that torchrun restarted after a failure (``--max-restarts``)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def pretrain(cfg: PretrainConfig, run_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """Pre-train an encoder; joins the process group under torchrun. Returns a summary dict.

    Writes ``run_dir``/config.json, metrics.jsonl, checkpoints/step-*.pt (every ``runtime.ckpt_every`` steps and at
    the end) and encoder.safetensors (+ init.safetensors, the random-init weights, for baselines).

    Args:
        resume: continue from the newest readable checkpoint of ``run_dir`` (a fresh start if there is none).

    Raises:
        ValueError: ``run_dir`` already holds checkpoints and ``resume`` is False, or bad data settings.
    """
    run_dir = Path(run_dir)
    info = init_distributed(cfg.runtime.device)
    if not resume and list_resume(run_dir):
        raise ValueError(f"{run_dir} already holds checkpoints; pass --resume or choose another --run-dir")
    with backend_settings(resolve_device(cfg.runtime.device, info.local_rank), cfg.runtime.deterministic):
        return _pretrain(cfg, run_dir, resume, info)


def _pretrain(cfg: PretrainConfig, run_dir: Path, resume: bool, info: DistInfo) -> dict[str, Any]:
    """:func:`pretrain` inside its backend settings: data, model, optional resume, the epoch loop, export."""
    ds = pretrain_dataset(cfg, info)
    loader = make_loader(ds, cfg.data, cfg.runtime.seed, info, resolve_device(cfg.runtime.device, info.local_rank))
    spe = loader.batch_sampler.batches_per_epoch
    t = build_trainer(cfg, info, spe)
    log = MetricsLog(run_dir / "metrics.jsonl", enabled=info.is_main)
    state = load_resume(run_dir) if resume else None
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(run_dir, cfg, derived_values(t, len(ds), spe))
        log.truncate(state["step"] if state else 0)  # records after the checkpoint are written again
        if state is None:
            save_weights(t.raw, run_dir / "init.safetensors", {"frontend": to_dict(cfg.frontend), "step": 0})
    if state is not None:
        restore(t, state)
        print0(f"resumed {run_dir} at step {t.step} from {state['path']}")
    t.first_attempt = state is None and not restarted()
    last: dict[str, Any] = {}
    while t.step < t.schedule.total_steps:
        epoch, start = divmod(t.step, spe)
        if start == 0:
            t.skipped = 0
        loader.batch_sampler.set_epoch(epoch, start)
        loader.generator.manual_seed(derive_seed(cfg.runtime.seed, epoch))  # worker seeds: a function of the epoch
        last = train_one_epoch(t, loader, epoch, run_dir, log) or last
        if last:
            shown = " ".join(f"{k} {last[k]:.4f}" for k in ("loss", "top1", "baseline") if k in last)
            print0(f"epoch {epoch}: step {t.step}/{t.schedule.total_steps} {shown} skipped {last['skipped']}")
    if not last and info.is_main:  # resumed a finished run: report its last logged window
        last = (read_metrics(run_dir / "metrics.jsonl") or [{}])[-1]
    weights = run_dir / "encoder.safetensors"
    if info.is_main:
        save_weights(t.raw, weights, {"frontend": to_dict(cfg.frontend), "pretrain": to_dict(cfg), "step": t.step})
    if info.enabled:
        dist.barrier()  # nobody leaves before the weights exist
    return {"run_dir": str(run_dir), "weights": str(weights), "init_weights": str(run_dir / "init.safetensors"),
            "step": t.step, **{k: last[k] for k in ("loss", "top1", "baseline") if k in last}}
