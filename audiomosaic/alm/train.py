"""One adapter stage: AdamW, warm-up then linear decay per step, gradient accumulation (docs/method.md §12).

The authors run each stage through the Hugging Face ``Trainer`` (``main_ltu.py``): AdamW (torch), 100 warm-up
steps then linear decay to 0, bf16, global batch 256 in micro-batches of 32, no weight decay. Here the loop is
written out; examples are ``{"clip": int, "instruction": str, "output": str}`` and ``get_specs(clip indices)``
returns their normalised fbanks (B, T, F). Not reproduced: ``group_by_length`` batching.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import torch

from audiomosaic.alm.config import StageConfig
from audiomosaic.alm.lm import AudioLM
from audiomosaic.alm.text import encode_example, left_pad

SpecFn = Callable[[Sequence[int]], torch.Tensor]


def linear_warmup_lr(step: int, total: int, cfg: StageConfig) -> float:
    """lr of optimiser step ``step`` (0-based) of ``total``: linear warm-up over ``warmup_steps``, then linear
    decay to 0 at ``total`` (``transformers.get_linear_schedule_with_warmup``)."""
    if step < cfg.warmup_steps:
        return cfg.lr * step / max(1, cfg.warmup_steps)
    return cfg.lr * max(0.0, (total - step) / max(1, total - cfg.warmup_steps))


def stage_steps(n_examples: int, cfg: StageConfig) -> int:
    """Optimiser steps of a stage: ceil(examples / global batch) per epoch, capped by ``max_steps``."""
    steps = cfg.epochs * math.ceil(n_examples / cfg.batch_size)
    return min(steps, cfg.max_steps) if cfg.max_steps > 0 else steps


@torch.no_grad()
def encoder_features(model: AudioLM, clips: Sequence[int], get_specs: SpecFn, batch: int = 64) -> dict[int, torch.Tensor]:
    """The frozen encoder's output (1 + N, D) for each clip, computed once (stage 1 trains only after it)."""
    enc, dev = model.prefix.encoder, model.prefix.proj.weight.device
    was_training, out = enc.training, {}
    enc.eval()
    for i in range(0, len(clips), batch):
        ids = list(clips[i:i + batch])
        feats = model.prefix.features(get_specs(ids).to(dev))
        out.update({c: f for c, f in zip(ids, feats)})
    enc.train(was_training)
    return out


def _micro_batch(model: AudioLM, examples: Sequence[dict[str, Any]], get_specs: SpecFn,
                 cache: dict[int, torch.Tensor] | None, device: torch.device) -> dict[str, torch.Tensor]:
    """Tokenised, left-padded text + the fbanks (or cached features) of its distinct clips, each encoded once."""
    enc = [encode_example(model.tokenizer, e["instruction"], e["output"], model.cfg.lm, e.get("input", ""))
           for e in examples]
    batch = left_pad([e["input_ids"] for e in enc], model.tokenizer.pad_token_id, [e["labels"] for e in enc])
    clips = sorted({e["clip"] for e in examples})
    where = {c: i for i, c in enumerate(clips)}
    batch["audio_index"] = torch.tensor([where[e["clip"]] for e in examples])
    batch = {k: v.to(device) for k, v in batch.items()}
    if cache is not None:
        batch["features"] = torch.stack([cache[c] for c in clips])
        batch["spec"] = batch["features"]  # only its length is read
    elif model.cfg.audio == "zero":
        batch["spec"] = torch.zeros(len(clips), 1, device=device)  # only its length is read
    else:
        batch["spec"] = get_specs(clips).to(device)
    return batch


def epoch_order(examples: Sequence[dict[str, Any]], gen: torch.Generator, group_by_clip: bool) -> list[int]:
    """A seeded permutation of the examples; with ``group_by_clip`` a permutation of the clips, each followed by
    all of its examples, so that a batch encodes fewer distinct clips."""
    if not group_by_clip:
        return torch.randperm(len(examples), generator=gen).tolist()
    by_clip: dict[int, list[int]] = {}
    for i, e in enumerate(examples):
        by_clip.setdefault(e["clip"], []).append(i)
    clips = list(by_clip)
    return [i for c in torch.randperm(len(clips), generator=gen).tolist() for i in by_clip[clips[c]]]


def train_stage(model: AudioLM, examples: Sequence[dict[str, Any]], get_specs: SpecFn, *,
                stage: StageConfig | None = None, cache_features: bool = False, group_by_clip: bool = False,
                log: Callable[[dict[str, Any]], None] | None = None, log_every: int = 10) -> dict[str, Any]:
    """Train ``model`` for one stage on ``examples``; returns a summary dict.

    Args:
        stage: the stage's settings (default: ``model.cfg.stage``), so one model runs the four stages in turn.
        cache_features: with a frozen encoder (``proj+norm``), run it once per clip instead of every step.
        group_by_clip: batches hold all the examples of fewer clips (see ``epoch_order``); the encoder, the
            costly part on a CPU, then runs once per distinct clip of a batch.
        log: receives ``{"stage", "step", "loss", "lr"}`` every ``log_every`` steps and at the end.

    Raises:
        FloatingPointError: a non-finite loss.
    """
    cfg, device = stage or model.cfg.stage, model.prefix.proj.weight.device
    model.set_trainable(cfg.trainable)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    cache = None
    if cache_features and cfg.trainable == "proj+norm" and model.cfg.audio != "zero":
        cache = encoder_features(model, sorted({e["clip"] for e in examples}), get_specs)
    total, accum = stage_steps(len(examples), cfg), cfg.batch_size // cfg.micro_batch
    gen = torch.Generator().manual_seed(model.cfg.runtime.seed * 1000 + sum(map(ord, cfg.name)))  # per stage
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    model.train()
    t0, step, losses, order = time.perf_counter(), 0, [], []
    while step < total:
        if len(order) < cfg.batch_size:  # examples come from a stream of seeded permutations, epoch after epoch
            order += epoch_order(examples, gen, group_by_clip)
        idx, order = order[:cfg.batch_size], order[cfg.batch_size:]
        for g in opt.param_groups:
            g["lr"] = linear_warmup_lr(step, total, cfg)
        step_loss = 0.0
        for j in range(0, len(idx), cfg.micro_batch):
            mb = _micro_batch(model, [examples[i] for i in idx[j:j + cfg.micro_batch]], get_specs, cache, device)
            with autocast:
                loss = model(**mb)["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()} at step {step} of {cfg.name}")
            (loss / accum).backward()
            step_loss += loss.item() / math.ceil(len(idx) / cfg.micro_batch)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(step_loss)
        step += 1
        if log is not None and (step % log_every == 0 or step == total):
            log({"stage": cfg.name, "step": step, "loss": step_loss, "lr": opt.param_groups[0]["lr"]})
    model.eval()
    return {"stage": cfg.name, "steps": total, "loss_first": losses[0] if losses else math.nan,
            "loss_last": losses[-1] if losses else math.nan, "wall_s": time.perf_counter() - t0}
