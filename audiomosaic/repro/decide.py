"""The reproduction that can decide (issue #11), pre-registered in ``paper_figures/README.md`` before its runs.

Four arms share seeds, pool, schedule and initial encoder weights (preset ``repro_cpu_long``: nano ViT, 0.975-s
windows cut at random from whole files, an unpadded 6 x 8 grid, 36 epochs, ~3,900 steps):

- ``tf``: AudioMosaic, time 0.6 / frequency 0.4 (16 and 24 of 48 tokens visible);
- ``unstructured_matched``: the same contrastive objective with unstructured masks of 20 + 20 visible tokens, the
  same tokens per pair as ``tf``;
- ``mae``: masked reconstruction (AudioMAE-style, mask 0.8: 9 visible tokens), the generative objective;
- ``random_init``: the arms' common initial weights (not trained).

Every trained encoder is gated (:func:`gate`): a contrastive one must end clearly below the constant predictor's
NT-Xent, ln(2B - 1), with a contrastive top-1 well above chance; a masked-reconstruction one below its
predict-the-mean score. Evaluations: linear (final output) and weighted-sum probes on inst11, speaker15 and drums7,
each the mean of its last 5 epochs; fine-tuning on inst11 and kws35; inst11 linear probes of the encoders exported
every 400 steps (learning curves). The primary analysis is :func:`audiomosaic.repro.primary.primary_claims`.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Mapping

from audiomosaic.config import PretrainConfig, config_hash
from audiomosaic.repro.suites import (
    Condition,
    Context,
    base_row,
    encoder_or_random,
    finetune_config,
    is_done,
    pretrain_config,
    probe_config,
    run_dir,
    save_rows,
)
from audiomosaic.train.finetune import run_finetune
from audiomosaic.train.probe import run_probe

PRESET = "repro_cpu_long"
PROBE_PRESET = "cpu"
FINETUNE_PRESET = "repro_cpu"
TASKS = ("inst11", "speaker15", "drums7")
FINETUNE_TASKS = ("inst11", "kws35")
EXPORT_EVERY = 400  # steps between exported encoders (learning curves)
PROBE = {"heads": ("linear", "weighted"), "layers": (-1,), "all_layers": False, "average_last": 5}
ARMS = (Condition("tf", {"mask.mode": "tf", "mask.layout": "paper"}),
        Condition("unstructured_matched", {"mask.mode": "unstructured", "mask.ratio": 0.58}),
        Condition("mae", {"objective": "mae"}),
        Condition("random_init", {}, pretrain=False))
SUITES = ("decide", "decide_finetune", "decide_curve")
# Primary comparisons (at most 4; Holm over these only): (table, probe head or "", a, b)
PRIMARY = (("table_decide", "weighted", "tf", "unstructured_matched"),
           ("table_decide", "weighted", "tf", "mae"),
           ("table_decide_finetune", "", "tf", "unstructured_matched"),
           ("table_decide_finetune", "", "tf", "mae"))
MARGIN = 0.02  # equivalence margin on the task-averaged accuracy difference, fixed before the runs
MIN_SEEDS = 5
TOP1_FACTOR = 10.0  # contrastive top-1 must reach 10x chance (1 / (2B - 1))
LOSS_MARGIN = 0.5  # nats below ln(2B - 1)


def design(ctx: Context) -> Context:
    """The pre-registered settings; only seeds, output folder and run root come from the command line."""
    return dataclasses.replace(ctx, preset=PRESET, probe_preset=PROBE_PRESET, finetune_preset=FINETUNE_PRESET,
                               tasks=TASKS, finetune_tasks=FINETUNE_TASKS,
                               overrides={"runtime.export_every": EXPORT_EVERY}, probe_overrides=PROBE,
                               finetune_overrides={})


def gate(pre: PretrainConfig, info: Mapping[str, Any]) -> bool | None:
    """Did the encoder learn its objective? None for the untrained random-init arm."""
    if not info.get("step"):
        return None
    if pre.objective == "mae":
        return info.get("baseline") is not None and info["loss"] < info["baseline"]
    negatives = 2 * pre.data.batch_size - 1  # one process: the global batch is the local one
    return info["loss"] <= math.log(negatives) - LOSS_MARGIN and info["top1"] >= TOP1_FACTOR / negatives


def _gate_columns(pre: PretrainConfig, info: Mapping[str, Any]) -> dict[str, Any]:
    return {"objective": pre.objective, "pretrain_top1": info.get("top1"), "pretrain_baseline": info.get("baseline"),
            "gate_pass": gate(pre, info)}


def probe_arms(ctx: Context, arms: tuple[Condition, ...] = ARMS) -> None:
    """Linear and weighted-sum probes of every arm on every task; rows -> ``table_decide``."""
    for seed in ctx.seeds:  # seed-major: any stop leaves complete paired blocks
        for cond in arms:
            pre = pretrain_config(ctx, cond, seed)
            if is_done(ctx, "table_decide", "decide", cond.name, seed, config_hash(pre), 2 * len(ctx.tasks)):
                continue
            pre, weights, info = encoder_or_random(ctx, cond, seed)
            rows = []
            for task in ctx.tasks:
                cfg = probe_config(ctx, pre, task, seed)
                t0 = time.perf_counter()
                res = run_probe(cfg, weights, run_dir(ctx, "probe", cond, pre, cfg), resume=True)
                wall = time.perf_counter() - t0
                rows += [{"model": cond.name, "task": r["task"], "probe": r["head"], "metric": r["metric"],
                          "value": r["value"], "selection": r["selection"], **_gate_columns(pre, info),
                          **base_row(ctx, "decide", cond, pre, info, cfg, wall)} for r in res["results"]]
            save_rows(ctx, "table_decide", rows)
            print(f"repro decide: {cond.name} seed {seed}: " + ", ".join(
                f"{r['task']}/{r['probe']} {r['value']:.4f}" for r in rows), flush=True)


def finetune_arms(ctx: Context, arms: tuple[Condition, ...] = ARMS) -> None:
    """Fine-tune every arm's encoder (random init: from scratch) on the fine-tuning tasks ->
    ``table_decide_finetune``."""
    for seed in ctx.seeds:
        for cond in arms:
            pre = pretrain_config(ctx, cond, seed)
            if is_done(ctx, "table_decide_finetune", "decide_finetune", cond.name, seed, config_hash(pre),
                       len(ctx.finetune_tasks)):
                continue
            pre, weights, info = encoder_or_random(ctx, cond, seed)
            rows = []
            for task in ctx.finetune_tasks:
                cfg = finetune_config(ctx, pre, task, seed)
                t0 = time.perf_counter()
                res = run_finetune(cfg, weights, run_dir(ctx, "finetune", cond, pre, cfg), resume=True)
                rows.append({"model": cond.name, "task": res["task"], "metric": res["metric"], "value": res["value"],
                             **_gate_columns(pre, info),
                             **base_row(ctx, "decide_finetune", cond, pre, info, cfg, time.perf_counter() - t0)})
            save_rows(ctx, "table_decide_finetune", rows)


def curve_arms(ctx: Context, arms: tuple[Condition, ...] = ARMS, task: str = "inst11") -> None:
    """Linear probes of every exported encoder (``encoder-step<N>.safetensors``) -> ``fig_learning_curve``."""
    for seed in ctx.seeds:
        for cond in (c for c in arms if c.pretrain):
            pre, weights, info = encoder_or_random(ctx, cond, seed)
            steps = sorted(Path(weights).parent.glob("encoder-step*.safetensors"))
            if is_done(ctx, "fig_learning_curve", "decide_curve", cond.name, seed, config_hash(pre), len(steps)):
                continue
            rows = []
            for path in steps:
                step = int(path.stem.removeprefix("encoder-step"))
                cfg = probe_config(ctx, pre, task, seed, {"heads": ("linear",)})
                t0 = time.perf_counter()
                res = run_probe(cfg, str(path), run_dir(ctx, "curve", cond, pre, cfg) / f"step{step}", resume=True)
                r = res["results"][0]
                rows.append({"model": cond.name, "task": task, "step": step, "metric": r["metric"],
                             "value": r["value"], **base_row(ctx, "decide_curve", cond, pre, info, cfg,
                                                             time.perf_counter() - t0)})
            save_rows(ctx, "fig_learning_curve", rows)


def run(name: str, ctx: Context, conditions: tuple[str, ...] = ()) -> None:
    """Run one of :data:`SUITES` with the pre-registered design; ``conditions`` keeps only those arms (e.g. the
    schedule pilot's ``tf mae``)."""
    unknown = set(conditions) - {c.name for c in ARMS}
    if unknown:
        raise ValueError(f"unknown arms {sorted(unknown)} for {name}; allowed: {', '.join(c.name for c in ARMS)}")
    arms = tuple(c for c in ARMS if not conditions or c.name in conditions)
    {"decide": probe_arms, "decide_finetune": finetune_arms, "decide_curve": curve_arms}[name](design(ctx), arms)
