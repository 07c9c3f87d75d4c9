"""AdamW parameter groups and the per-step warmup + cosine schedule (docs/method.md §7, §8)."""
from __future__ import annotations

import math

import pytest
import torch

from audiomosaic.config import OptimConfig
from audiomosaic.model import create_model
from audiomosaic.train.optim import build_adamw, cosine_lr, layer_id, make_schedule, param_groups, set_lr


def test_schedule_lr_scaling_and_step_counts() -> None:
    s = make_schedule(OptimConfig(lr=6e-4, epochs=10, warmup_epochs=1.0), steps_per_epoch=50, global_batch=2048)
    assert (s.base_lr, s.total_steps, s.warmup_steps) == (6e-4, 500, 50)  # pre-training: not batch-scaled
    ft = make_schedule(OptimConfig(blr=1e-3, epochs=10), steps_per_epoch=50, global_batch=512)
    assert ft.base_lr == pytest.approx(1e-3 * 512 / 256)
    capped = make_schedule(OptimConfig(epochs=10, warmup_epochs=100.0), steps_per_epoch=50, global_batch=1,
                           max_steps=8)
    assert capped.total_steps == 8 and capped.warmup_steps < 8  # the warmup never swallows the whole run


def test_warmup_and_cosine_endpoints() -> None:
    s = make_schedule(OptimConfig(lr=1e-3, min_lr=1e-6, epochs=10, warmup_epochs=1.0), 100, 256)
    assert cosine_lr(0, s) == 0.0
    assert cosine_lr(50, s) == pytest.approx(0.5e-3)  # linear warmup
    assert cosine_lr(100, s) == pytest.approx(1e-3)  # peak
    mid = 100 + (1000 - 100) // 2
    assert cosine_lr(mid, s) == pytest.approx((1e-3 + 1e-6) / 2)  # half-cosine: halfway between the ends
    assert cosine_lr(1000, s) == pytest.approx(1e-6)
    assert cosine_lr(5000, s) == pytest.approx(1e-6)  # clamped past the end
    lrs = [cosine_lr(i, s) for i in range(1001)]
    assert all(a <= b for a, b in zip(lrs[:100], lrs[1:101]))
    assert all(a >= b for a, b in zip(lrs[100:-1], lrs[101:]))


def test_no_weight_decay_on_1d_params_cls_and_pos() -> None:
    model = create_model("vit_nano", spec_size=(64, 32))
    groups = param_groups(model, weight_decay=0.05)
    seen = [n for g in groups for n in g["names"]]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(seen) == sorted(trainable)  # every trainable parameter exactly once, frozen ones left out
    assert "projector.4.bias" not in seen  # frozen at 0 (docs/method.md §4)
    params = dict(model.named_parameters())
    for g in groups:
        for n in g["names"]:
            no_decay = params[n].ndim <= 1 or n in ("cls_token", "pos_embed")
            assert g["weight_decay"] == (0.0 if no_decay else 0.05), n


def test_adamw_decays_exactly_the_decay_group() -> None:
    """With zero gradients, AdamW's only update is the decoupled decay: p <- p (1 - lr wd)."""
    model = create_model("vit_nano", spec_size=(64, 32))
    opt = build_adamw(model, OptimConfig(lr=0.1, weight_decay=0.5))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        if p.requires_grad and p.ndim > 1 and n not in ("cls_token", "pos_embed"):
            torch.testing.assert_close(p, before[n] * (1 - 0.1 * 0.5))
        else:
            assert torch.equal(p, before[n]), n


def test_layer_decay_scales() -> None:
    depth, ld = 4, 0.75
    model = create_model("vit_nano", spec_size=(64, 32), num_classes=3, projector=False)
    assert len(model.blocks) == depth
    expected = {0: ld ** (depth + 1), **{i + 1: ld ** (depth - i) for i in range(depth)}, depth + 1: 1.0}
    for g in param_groups(model, 0.05, layer_decay=ld):
        for n in g["names"]:
            assert g["lr_scale"] == pytest.approx(expected[layer_id(n, depth)]), n
    assert layer_id("patch_embed.proj.weight", depth) == 0 and layer_id("blocks.2.mlp.fc1.weight", depth) == 3
    assert layer_id("head.weight", depth) == depth + 1
    opt = torch.optim.AdamW(param_groups(model, 0.05, layer_decay=ld))
    set_lr(opt, 1e-3)
    assert sorted({g["lr"] for g in opt.param_groups}) == pytest.approx(sorted({1e-3 * s for s in expected.values()}))
    assert max(g["lr"] for g in opt.param_groups) == pytest.approx(1e-3) and math.isclose(
        min(g["lr"] for g in opt.param_groups), 1e-3 * ld ** (depth + 1))
