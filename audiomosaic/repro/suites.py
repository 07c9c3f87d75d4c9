"""Small-scale reproduction suites (issue #6): pre-train -> evaluate -> result rows, over several seeds.

``python -m audiomosaic repro --suite main --seeds 0 1 2 [--preset repro_cpu] [--out paper_figures/results]``
(command line: :mod:`audiomosaic.cli.repro`).

A suite is a list of conditions (dotted PretrainConfig overrides). For every (condition, seed) the encoder is
pre-trained with :func:`audiomosaic.train.pretrain.pretrain` in ``<run-root>/pretrain/<config hash>``
(content-addressed: two suites asking for the same config share one encoder, and a stopped run resumes from its
checkpoint), then
evaluated on the corpus' labelled tasks (held-out groups). Rows go to the committed tables of
:data:`audiomosaic.lab.analysis.RESULTS` in ``--out`` with their provenance; a (condition, seed) whose rows are there
is skipped, so an interrupted suite continues where it stopped. ``--report`` turns the tables into ``claims.csv``
and the ``## Claims`` section of ``paper_figures/README.md`` (:mod:`audiomosaic.repro.report`).

Suites: ``main`` (masking strategies + random init, linear probes), ``ratio`` (tf time x freq ratio grid),
``batch`` (pre-training batch size), ``strategy`` (strategy x mask ratio, Fig. 4a), ``layout`` (paper vs the
authors' code's mask and position geometry on a 6 x 8 grid), ``erank`` (effective rank under inference-time
masking, Fig. 2), ``layers`` (layer-wise / weighted / attentive probes of the tf encoder, Fig. 3), ``finetune``
(tf vs unstructured vs random).
"""
from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd
import torch

from audiomosaic.config import (
    FinetuneConfig,
    MaskConfig,
    PretrainConfig,
    ProbeConfig,
    config_hash,
    resolve,
    to_dict,
)
from audiomosaic.lab.analysis import (
    append_results,
    effective_rank_study,
    load_specs,
    mask_ratio,
    probe_rows,
    strategy_ratio_points,
)
from audiomosaic.model import AudioMosaic
from audiomosaic.presets import FINETUNE_PRESETS, PROBE_PRESETS
from audiomosaic.train.checkpoint import git_sha, load_any
from audiomosaic.train.finetune import run_finetune
from audiomosaic.train.pretrain import pretrain
from audiomosaic.train.probe import corpus_root, run_probe, task_manifests

TASKS = ("kws35", "inst11", "drums7")
# tf on the 8 x 8 grid of 1-s clips keeps 3 of 8 time columns (24 tokens) in one view and 4 of 8 frequency rows
# (32) in the other: 28 of 64 on average. Dropping 0.5625 of the tokens at random keeps the same 28, so tf and
# unstructured see equally many tokens and differ only in which (docs/method.md §10: "same masking ratios").
UNSTRUCTURED_RATIO = 0.5625


@dataclass(frozen=True)
class Condition:
    """One arm of a suite: dotted PretrainConfig overrides, or no pre-training at all (the random-init floor)."""

    name: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    pretrain: bool = True


TF = Condition("tf_paper", {"mask.mode": "tf", "mask.layout": "paper"})
UNSTRUCTURED = Condition("unstructured", {"mask.mode": "unstructured", "mask.ratio": UNSTRUCTURED_RATIO})
RANDOM = Condition("random_init", {}, pretrain=False)
EVAL_CONDITIONS = (TF, UNSTRUCTURED, RANDOM)  # the erank and finetune suites' arms
SUITES = ("main", "ratio", "batch", "strategy", "layout", "erank", "layers", "finetune")
# On a square grid (128 frames -> 8 x 8) the reference layout's masks and sin-cos table coincide with the paper
# layout's (tests/test_repro.py checks it), so tf_reference differs from tf_paper only at >= 256 frames.
MAIN = (TF, UNSTRUCTURED, RANDOM, Condition("tt", {"mask.mode": "tt"}), Condition("ff", {"mask.mode": "ff"}),
        Condition("tf_reference", {"mask.mode": "tf", "mask.layout": "reference",
                                   "encoder.sincos_layout": "reference"}))
RATIO_GRID = ((0.4, 0.2), (0.4, 0.4), (0.4, 0.6), (0.6, 0.2), (0.6, 0.4), (0.6, 0.6), (0.8, 0.2), (0.8, 0.4),
              (0.8, 0.6))
RATIO = tuple(TF if (t, f) == (0.6, 0.4) else Condition(f"tf_t{t}_f{f}", {**TF.overrides, "mask.ratio_time": t,
                                                                           "mask.ratio_freq": f})
              for t, f in RATIO_GRID)
# The reference layout differs from the paper layout only on a non-square patch grid (docs/method.md §5.3): 96
# frames of the 1-s clips give a 6 x 8 (time x frequency) grid, where the authors' code masks and places sin-cos
# positions on a transposed (8, 6) view. Both arms use the same input, so the comparison isolates the geometry.
_GRID_6X8 = {"frontend.target_frames": 96, "encoder.spec_size": (96, 128)}
LAYOUT = (Condition("tf_paper_6x8", {**TF.overrides, **_GRID_6X8}),
          Condition("tf_reference_6x8", {"mask.mode": "tf", "mask.layout": "reference",
                                         "encoder.sincos_layout": "reference", **_GRID_6X8}))
BATCH = tuple(Condition(f"tf_bs{b}", {**TF.overrides, "data.batch_size": b}) for b in (32, 64, 128))
# Fig. 4a: every strategy drops the same fraction of its own units (analysis.strategy_ratio_points), so every view
# keeps about (1 - r) of the tokens. Points whose config equals another suite's (tf 0.4 and 0.6: the ratio grid's
# diagonal; tt 0.6: main's tt; ff 0.4: main's ff) reuse that encoder through the config hash.
STRATEGY_RATIOS = (0.4, 0.6, 0.8)
STRATEGY = tuple(Condition(f"{p['mask.mode']}_r{r}", {**({"mask.layout": "paper"} if p["mask.mode"] == "tf" else {}),
                                                     **p})
                 for r in STRATEGY_RATIOS for p in strategy_ratio_points(("tf", "tt", "ff", "unstructured"), (r,)))


@dataclass(frozen=True)
class Context:
    """What every suite needs: presets, overrides per config class, tasks, seeds and where things go."""

    preset: str = "repro_cpu"
    probe_preset: str = "cpu"
    finetune_preset: str = "repro_cpu"
    tasks: tuple[str, ...] = TASKS
    seeds: tuple[int, ...] = (0, 1, 2)
    out: Path = Path("paper_figures/results")
    run_root: Path = Path("runs/repro")
    overrides: Mapping[str, Any] = field(default_factory=dict)  # PretrainConfig keys
    probe_overrides: Mapping[str, Any] = field(default_factory=dict)  # ``probe.<key>=`` on the command line
    finetune_overrides: Mapping[str, Any] = field(default_factory=dict)  # ``finetune.<key>=``
    finetune_tasks: tuple[str, ...] = ("inst11",)


# ------------------------------------------------------------------------------------------------- provenance

def machine() -> str:
    """CPU model and usable cores (plus the GPU, if any), e.g. ``Intel(R) Xeon(R) ... x 2 cores``."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    name = f"{model} x {len(os.sched_getaffinity(0))} cores"
    return name + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "")


# Package paths that only analyse or draw committed rows: they cannot change a number in a result table, so they
# are left out of the rows' code version (editing a figure or the report mid-run keeps the version of the rows).
ANALYSIS_ONLY = ("lab", "repro/report.py", "repro/primary.py", "repro/stats.py", "repro/check.py",
                 "cli/figures.py", "alm", "hear.py")


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The last commit that changed the package's training code (``git log -1`` over the package without
    :data:`ANALYSIS_ONLY`), with ``+dirty`` when that code differs from HEAD (read-only). Why not HEAD: a commit of
    result rows, docs, tests or figures between two seeds of a long run leaves the code that computes the numbers
    unchanged, and rows from one training code should carry one version. Read once per process (the CLI reads it
    at start): rows name the code the process loaded, not a tree edited while it ran."""
    root = Path(__file__).resolve().parents[1]  # the whole package, not just repro/
    spec = [".", *(f":(exclude){p}" for p in ANALYSIS_ONLY)]
    try:
        sha = subprocess.run(["git", "log", "-1", "--format=%h", "--", *spec], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip() or git_sha()
        diff = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", *spec], cwd=root, timeout=10).returncode
        untracked = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "--", *spec], cwd=root,
                                   capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return git_sha()
    return sha + ("+dirty" if diff or untracked else "")


# --------------------------------------------------------------------------------------------- configs, runs

def pretrain_config(ctx: Context, cond: Condition, seed: int) -> PretrainConfig:
    """Preset + the suite's overrides + the condition's + the seed (later wins)."""
    return resolve(ctx.preset, {**ctx.overrides, **cond.overrides, "runtime.seed": seed})


def corpus(cfg: PretrainConfig) -> Path:

    return corpus_root(cfg.data)


def encoder_weights(cfg: PretrainConfig, run_root: Path) -> tuple[Path, dict[str, Any]]:
    """Pre-train (or reuse) the encoder of ``cfg``; returns (weights, {"wall_s", "loss", "top1", "step"})."""

    run_dir = run_root / "pretrain" / config_hash(cfg)
    done = run_dir / "repro_done.json"
    if done.is_file() and (run_dir / "encoder.safetensors").is_file():
        return run_dir / "encoder.safetensors", json.loads(done.read_text())
    t0 = time.perf_counter()
    summary = pretrain(cfg, run_dir, resume=True)
    info = {"wall_s": time.perf_counter() - t0, **{k: summary.get(k) for k in ("loss", "top1", "baseline", "step")}}
    done.write_text(json.dumps(info))
    return Path(summary["weights"]), info


def probe_config(ctx: Context, pre: PretrainConfig, task: str, seed: int,
                 extra: Mapping[str, Any] | None = None) -> ProbeConfig:
    """The probe of one task on the pre-training corpus; the encoder section matters only for random init."""
    ov = {"data.cache_features": True, "data.num_workers": 0, "runtime.progress": False, **ctx.probe_overrides,
          **dict(extra or {}), "data.root": str(corpus(pre)), "data.task": task, "runtime.seed": seed,
          "encoder": to_dict(pre.encoder), "frontend": to_dict(pre.frontend)}
    return resolve(ctx.probe_preset, ov, presets=PROBE_PRESETS, cls=ProbeConfig)


def finetune_config(ctx: Context, pre: PretrainConfig, task: str, seed: int) -> FinetuneConfig:
    """The fine-tune of one task on the pre-training corpus; the encoder section matters only for random init."""
    ov = {"data.num_workers": 0, "runtime.progress": False, **ctx.finetune_overrides, "data.root": str(corpus(pre)),
          "data.task": task, "runtime.seed": seed, "encoder": to_dict(pre.encoder), "frontend": to_dict(pre.frontend)}
    return resolve(ctx.finetune_preset, ov, presets=FINETUNE_PRESETS, cls=FinetuneConfig)


def encoder_or_random(ctx: Context, cond: Condition, seed: int) -> tuple[PretrainConfig, str, dict[str, Any]]:
    """(pre-training config, weights path or ``"random"``, pre-training info) of a condition."""
    pre = pretrain_config(ctx, cond, seed)
    if not cond.pretrain:
        return pre, "random", {"wall_s": 0.0, "loss": None, "top1": None, "step": 0}
    weights, info = encoder_weights(pre, ctx.run_root)
    return pre, str(weights), info


def run_dir(ctx: Context, kind: str, cond: Condition, pre: PretrainConfig, eval_cfg: Any) -> Path:
    """``<run-root>/<kind>/<condition>-<config hash>/<task>-<eval config hash>``: random init shares its config
    with tf, not its weights; a changed probe or fine-tune recipe never resumes a stale run."""
    return (ctx.run_root / kind / f"{cond.name}-{config_hash(pre)}" /
            f"{eval_cfg.data.task}-{config_hash(eval_cfg)}")


def base_row(ctx: Context, suite: str, cond: Condition, pre: PretrainConfig, info: Mapping[str, Any],
             eval_cfg: Any, eval_wall: float) -> dict[str, Any]:
    return {"suite": suite, "condition": cond.name, "seed": int(pre.runtime.seed), "config_hash": config_hash(pre),
            "eval_config_hash": config_hash(eval_cfg), "git_sha": code_version(), "machine": machine(),
            "wall_s": round(info["wall_s"] + eval_wall, 1), "pretrain_wall_s": round(info["wall_s"], 1),
            "eval_wall_s": round(eval_wall, 1), "pretrain_loss": info.get("loss"), "pretrain_steps": info.get("step"),
            "source": f"audiomosaic.repro.suites --suite {suite} --preset {ctx.preset} (this code's own runs)"}


# ----------------------------------------------------------------------------------------------- tables

TABLE_KEYS = {"table_probe": ("task", "probe"), "fig4a_masking_ratio": ("task",), "fig4b_tf_ratio_grid": ("task",),
              "fig4c_batch_size": ("task",), "fig2_effective_rank": ("task", "inference_masking"),
              "fig3_layerwise_probe": ("task", "probe", "layer"), "table_finetune": ("task",),
              "table_decide": ("task", "probe"), "table_decide_finetune": ("task",),
              "fig_learning_curve": ("task", "step")}


def table_path(ctx: Context, table: str) -> Path:
    return Path(ctx.out) / f"{table}.csv"


def is_done(ctx: Context, table: str, suite: str, cond: str, seed: int, cfg_hash: str, n_rows: int) -> bool:
    """True when ``table`` already holds ``n_rows`` rows of this (suite, condition, seed, config)."""
    path = table_path(ctx, table)
    if not path.is_file():
        return False
    df = pd.read_csv(path)
    if "suite" not in df.columns:
        return False
    hit = df[(df["suite"] == suite) & (df["condition"] == cond) & (df["seed"] == seed)
             & (df["config_hash"] == cfg_hash)]
    return len(hit) >= n_rows


def save_rows(ctx: Context, table: str, rows: Sequence[Mapping[str, Any]]) -> None:

    append_results(rows, table_path(ctx, table), key=("suite", "condition", "seed", *TABLE_KEYS[table]))


# ----------------------------------------------------------------------------------------------- suites

def probe_suite(ctx: Context, suite: str, conditions: Sequence[Condition], table: str,
                columns: Callable[[Condition, PretrainConfig], dict[str, Any]]) -> None:
    """Pre-train each condition per seed and linear-probe its final output on every task."""

    for seed in ctx.seeds:
        for cond in conditions:
            pre = pretrain_config(ctx, cond, seed)
            if is_done(ctx, table, suite, cond.name, seed, config_hash(pre), len(ctx.tasks)):
                print(f"repro {suite}: {cond.name} seed {seed} done, skipped", flush=True)
                continue
            pre, weights, info = encoder_or_random(ctx, cond, seed)
            rows = []
            for task in ctx.tasks:
                cfg = probe_config(ctx, pre, task, seed, {"heads": ("linear",), "layers": (-1,), "all_layers": False})
                t0 = time.perf_counter()
                res = run_probe(cfg, weights, run_dir(ctx, "probe", cond, pre, cfg), resume=True)
                r = res["results"][0]
                rows.append({**columns(cond, pre), "task": r["task"], "metric": r["metric"], "value": r["value"],
                             **base_row(ctx, suite, cond, pre, info, cfg, time.perf_counter() - t0)})
            save_rows(ctx, table, rows)
            print(f"repro {suite}: {cond.name} seed {seed}: " +
                  ", ".join(f"{r['task']} {r['value']:.4f}" for r in rows), flush=True)


def erank_suite(ctx: Context, conditions: Sequence[Condition] = EVAL_CONDITIONS,
                inference: Sequence[str] = ("none", "unstructured", "tf")) -> None:
    """Fig. 2: effective rank of pooled test-split features of each encoder under inference-time masking."""

    mask = MaskConfig(ratio_time=0.6, ratio_freq=0.4, ratio=UNSTRUCTURED_RATIO)
    specs: dict[str, torch.Tensor] = {}  # task -> (N, 1, T, F) test-split fbanks, read once for every encoder
    for seed in ctx.seeds:
        for cond in conditions:
            pre = pretrain_config(ctx, cond, seed)
            n_rows = len(ctx.tasks) * len(inference)
            if is_done(ctx, "fig2_effective_rank", "erank", cond.name, seed, config_hash(pre), n_rows):
                continue
            pre, weights, info = encoder_or_random(ctx, cond, seed)
            if weights == "random":
                torch.manual_seed(seed)
                model = AudioMosaic(pre.encoder, projector=False)
            else:
                model = load_any(weights)
            rows = []
            for task in ctx.tasks:
                cfg = probe_config(ctx, pre, task, seed)
                t0 = time.perf_counter()
                if task not in specs:
                    specs[task] = load_specs(task_manifests(cfg.data)[1].paths, pre.frontend, pre.data.clip_seconds)
                df = effective_rank_study({cond.name: model}, specs[task], inference, mask, seed=seed)
                wall = (time.perf_counter() - t0) / len(df)
                rows += [{"task": task, "pretrain_masking": cond.name, "inference_masking": r["inference_masking"],
                          "effective_rank": r["effective_rank"], "n_clips": r["n_clips"],
                          "feature_dim": r["feature_dim"], **base_row(ctx, "erank", cond, pre, info, cfg, wall)}
                         for r in df.to_dict("records")]
            save_rows(ctx, "fig2_effective_rank", rows)
            print(f"repro erank: {cond.name} seed {seed}: " + ", ".join(
                f"{r['task']}/{r['inference_masking']} {r['effective_rank']:.2f}" for r in rows), flush=True)


def layers_suite(ctx: Context, cond: Condition = TF) -> None:
    """Fig. 3: a linear head on every block output, plus weighted-sum and attentive heads, of one encoder."""

    for seed in ctx.seeds:
        pre = pretrain_config(ctx, cond, seed)
        depth = pre.encoder.depth
        if is_done(ctx, "fig3_layerwise_probe", "layers", cond.name, seed, config_hash(pre),
                   len(ctx.tasks) * (depth + 3)):
            continue
        pre, weights, info = encoder_or_random(ctx, cond, seed)
        rows = []
        for task in ctx.tasks:
            cfg = probe_config(ctx, pre, task, seed, {"all_layers": True, "heads": ("linear", "weighted", "attentive")})
            t0 = time.perf_counter()
            res = run_probe(cfg, weights, run_dir(ctx, "layers", cond, pre, cfg), resume=True)
            df = probe_rows(res["results"], cond.name)
            row = base_row(ctx, "layers", cond, pre, info, cfg, time.perf_counter() - t0)
            rows += [{**r, **row} for r in df.to_dict("records")]
        save_rows(ctx, "fig3_layerwise_probe", rows)
        print(f"repro layers: seed {seed}: {len(rows)} rows", flush=True)


def finetune_suite(ctx: Context, conditions: Sequence[Condition] = EVAL_CONDITIONS) -> None:
    """End-to-end fine-tuning of each condition's encoder (random init: from scratch) on ``finetune_tasks``."""

    for seed in ctx.seeds:
        for cond in conditions:
            pre = pretrain_config(ctx, cond, seed)
            if is_done(ctx, "table_finetune", "finetune", cond.name, seed, config_hash(pre), len(ctx.finetune_tasks)):
                continue
            pre, weights, info = encoder_or_random(ctx, cond, seed)
            rows = []
            for task in ctx.finetune_tasks:
                cfg = finetune_config(ctx, pre, task, seed)
                t0 = time.perf_counter()
                res = run_finetune(cfg, weights, run_dir(ctx, "finetune", cond, pre, cfg), resume=True)
                rows.append({"model": cond.name, "task": res["task"], "metric": res["metric"], "value": res["value"],
                             **base_row(ctx, "finetune", cond, pre, info, cfg, time.perf_counter() - t0)})
            save_rows(ctx, "table_finetune", rows)
            print(f"repro finetune: {cond.name} seed {seed}: " +
                  ", ".join(f"{r['task']} {r['value']:.4f}" for r in rows), flush=True)


PROBE_SUITES: dict[str, tuple[Sequence[Condition], str, Callable[[Condition, PretrainConfig], dict[str, Any]]]] = {
    "main": (MAIN, "table_probe", lambda c, p: {"model": c.name, "probe": "linear"}),
    "ratio": (RATIO, "fig4b_tf_ratio_grid",
              lambda c, p: {"ratio_time": p.mask.ratio_time, "ratio_freq": p.mask.ratio_freq}),
    "batch": (BATCH, "fig4c_batch_size", lambda c, p: {"batch_size": p.data.batch_size}),
    "layout": (LAYOUT, "table_probe", lambda c, p: {"model": c.name, "probe": "linear"}),
    "strategy": (STRATEGY, "fig4a_masking_ratio",
                 lambda c, p: {"strategy": p.mask.mode, "mask_ratio": mask_ratio(p.mask)}),
}


def check_conditions(conditions: Sequence[str]) -> None:
    """Raise ValueError for a condition that no probe suite has (listing the allowed ones)."""
    known = {c.name for conds, _, _ in PROBE_SUITES.values() for c in conds}
    bad = [c for c in conditions if c not in known]
    if bad:
        raise ValueError(f"unknown conditions {bad}; allowed: {', '.join(sorted(known))}")


def run_suite(name: str, ctx: Context, conditions: Sequence[str] = ()) -> None:
    """Run suite ``name``; ``conditions`` keeps only those of its conditions (every suite; the others are fixed).

    Raises:
        ValueError: unknown suite, or a condition that no probe suite has (naming the allowed ones).
    """
    check_conditions(conditions)

    def keep(conds: Sequence[Condition]) -> list[Condition]:
        return [c for c in conds if not conditions or c.name in conditions]

    if name in PROBE_SUITES:
        conds, table, columns = PROBE_SUITES[name]
        probe_suite(ctx, name, keep(conds), table, columns)
    elif name == "erank":
        erank_suite(ctx, keep(EVAL_CONDITIONS))
    elif name == "layers":
        if keep((TF,)):
            layers_suite(ctx)
    elif name == "finetune":
        finetune_suite(ctx, keep(EVAL_CONDITIONS))
    else:
        raise ValueError(f"unknown suite {name!r}; allowed: {', '.join(SUITES)}")
