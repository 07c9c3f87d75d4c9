"""AdamW parameter groups (weight-decay exclusions, BEiT layer-wise lr decay) and the per-step lr schedule."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from audiomosaic.config import OptimConfig


@dataclass(frozen=True)
class Schedule:
    """Derived step counts and learning rate; a pure function of the config and the data size (logged)."""

    base_lr: float
    min_lr: float
    total_steps: int
    warmup_steps: int


def make_schedule(cfg: OptimConfig, steps_per_epoch: int, global_batch: int, max_steps: int = 0) -> Schedule:
    """lr = blr * global_batch / 256 when ``blr`` > 0 (fine-tuning), else the absolute ``lr`` (pre-training)."""
    base = cfg.blr * global_batch / 256 if cfg.blr > 0 else cfg.lr
    total = steps_per_epoch * cfg.epochs
    if max_steps > 0:
        total = min(total, max_steps) if total > 0 else max_steps
    warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), max(total - 1, 0))
    return Schedule(base_lr=base, min_lr=cfg.min_lr, total_steps=max(total, 1), warmup_steps=warmup)


def cosine_lr(step: int, s: Schedule) -> float:
    """Linear warmup from 0 to ``base_lr``, then half-cosine down to ``min_lr``, per step (docs/method.md §7)."""
    if step < s.warmup_steps:
        return s.base_lr * step / s.warmup_steps
    t = (step - s.warmup_steps) / max(1, s.total_steps - s.warmup_steps)
    return s.min_lr + (s.base_lr - s.min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


def layer_id(name: str, depth: int) -> int:
    """BEiT grouping: patch embed / CLS / pos -> 0, ``blocks.i`` -> i + 1, everything else -> depth + 1."""
    if name.startswith(("cls_token", "pos_embed", "patch_embed")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0,
                 no_decay_names: set[str] | None = None) -> list[dict]:
    """AdamW groups: no decay on 1-D tensors (biases, norms), CLS and the position table; lr scale per layer.

    Each group carries ``lr_scale`` = layer_decay ** (depth + 1 - layer_id); the engine multiplies the scheduled
    lr by it. Frozen parameters are left out.
    """
    skip = set(no_decay_names or ()) | set(getattr(model, "no_weight_decay", lambda: set())())
    depth = len(getattr(model, "blocks", []))
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim > 1 and name not in skip and not name.endswith(".bias")
        lid = layer_id(name, depth) if layer_decay < 1.0 else depth + 1
        g = groups.setdefault((lid, decay), {"params": [], "weight_decay": weight_decay if decay else 0.0,
                                             "lr_scale": layer_decay ** (depth + 1 - lid), "names": []})
        g["params"].append(p)
        g["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def build_adamw(model: nn.Module, cfg: OptimConfig, fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; fused kernels on CUDA."""
    groups = param_groups(model, cfg.weight_decay, cfg.layer_decay)
    on_cuda = next(model.parameters()).is_cuda
    for g in groups:
        g.pop("names")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=on_cuda if fused is None else fused)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
