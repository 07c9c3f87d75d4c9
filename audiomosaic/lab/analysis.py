"""Library side of the analysis notebooks: run tables, ablation grids and their runs, the effective-rank study.

- :func:`ablation_grid` expands a grid of dotted config overrides into configs (one notebook run per ablation,
  docs/style.md 13); :func:`strategy_ratio_points` gives Fig. 4a's masking strategy x ratio points;
  :func:`run_ablation` pre-trains and evaluates every point.
- :func:`finetune_jobs` / :func:`run_finetunes`: the corpus tasks and the paper's benchmarks, one call each.
- :func:`effective_rank_study` extracts pooled features of frozen encoders under inference-time masking and
  measures their effective rank (docs/method.md §10, Decision 4).

The committed result tables and their provenance live in :mod:`audiomosaic.repro.results`.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from audiomosaic.config import (
    FinetuneConfig,
    FrontendConfig,
    MaskConfig,
    ProbeConfig,
    apply_overrides,
    config_hash,
    resolve,
    to_dict,
)
from audiomosaic.data.audio import fit_length, read_audio
from audiomosaic.frontend import fbank_batch
from audiomosaic.masking import single_mask, time_freq_mask
from audiomosaic.metrics import effective_rank
from audiomosaic.model import AudioMosaic
from audiomosaic.paths import repo_path
from audiomosaic.presets import FINETUNE_PRESETS, PROBE_PRESETS

# The result-table API, re-exported: the notebooks and audiomosaic.repro.suites call it as analysis.*.
from audiomosaic.repro.results import (  # noqa: F401
    PROVENANCE,
    RESULTS,
    TABLES,
    append_results,
    load_result,
    machine_name,
    markdown_table,
    probe_rows,
    probe_table,
    provenance,
    record_results,
    result_table,
    write_table,
)
from audiomosaic.train.finetune import run_finetune
from audiomosaic.train.pretrain import pretrain
from audiomosaic.train.probe import corpus_root, run_probe
from audiomosaic.train.runlog import read_metrics as read_jsonl

# ---------------------------------------------------------------------------------------------- runs and grids

def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    """The complete records of ``<run_dir>/metrics.jsonl`` as a DataFrame (empty while nothing is logged)."""

    return pd.DataFrame(read_jsonl(Path(run_dir) / "metrics.jsonl"))


def results_table(runs: Iterable[str | Path], config_keys: Sequence[str] = ()) -> pd.DataFrame:
    """One row per run folder: selected dotted config keys, the config hash and the last logged metrics.

    Each folder needs ``config.json``; the metrics come from ``results.json`` if present, else from the last
    line of ``metrics.jsonl``.
    """
    rows = []
    for run in map(Path, runs):
        cfg = json.loads((run / "config.json").read_text())
        flat = pd.json_normalize(cfg.get("config", cfg), sep=".").iloc[0].to_dict()  # runlog.write_config layout
        row: dict[str, Any] = {"run": run.name, **{k: flat.get(k) for k in config_keys}}
        if (run / "results.json").is_file():
            row.update(json.loads((run / "results.json").read_text()))
        elif not (metrics := read_metrics(run)).empty:
            row.update(metrics.iloc[-1].to_dict())
        rows.append(row)
    return pd.DataFrame(rows)


def ablation_grid(base_cfg: Any, grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]
                  ) -> list[tuple[dict[str, Any], Any]]:
    """Expand an ablation grid into ``(overrides, config)`` pairs, each validated by ``apply_overrides``.

    Args:
        base_cfg: the resolved config every point starts from.
        grid: ``{"mask.ratio_time": [0.4, 0.6], "mask.ratio_freq": [0.2, 0.4]}`` (cartesian product, in key
            order) or an explicit list of override dicts (e.g. :func:`strategy_ratio_points`).
    Raises:
        ValueError: an unknown key or a bad value at any point (before anything runs).
    """
    if isinstance(grid, Mapping):
        keys = list(grid)
        points = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
    else:
        points = [dict(p) for p in grid]
    return [(p, apply_overrides(base_cfg, p)) for p in points]


def strategy_ratio_points(strategies: Sequence[str], ratios: Sequence[float]) -> list[dict[str, Any]]:
    """Fig. 4a points: one mask ratio per strategy applied to the units that strategy drops.

    ``tf`` drops time columns and frequency rows at the same ratio, ``tt`` time columns, ``ff`` frequency rows,
    ``unstructured`` random tokens (our reading: the paper's per-strategy ratio definition is unknown, docs/method.md §10).
    """
    keys = {"tf": ("mask.ratio_time", "mask.ratio_freq"), "tt": ("mask.ratio_time",),
            "ff": ("mask.ratio_freq",), "unstructured": ("mask.ratio",)}
    bad = [s for s in strategies if s not in keys]
    if bad:
        raise ValueError(f"unknown masking strategies {bad}; allowed: {', '.join(keys)}")
    return [{"mask.mode": s, **{k: float(r) for k in keys[s]}} for s in strategies for r in ratios]


def point_name(overrides: Mapping[str, Any]) -> str:
    """A folder name for a grid point: ``{"mask.mode": "tf", "mask.ratio_time": 0.6}`` -> ``mode-tf_ratio_time-0.6``."""
    return "_".join(f"{k.rsplit('.', 1)[-1]}-{v}" for k, v in overrides.items()) or "base"


def mask_ratio(mask: MaskConfig) -> float:
    """The nominal ratio of Fig. 4a: of time units (tt), frequency units (ff), tokens (unstructured); tf only when
    both ratios are equal (NaN otherwise)."""
    by_mode = {"tt": mask.ratio_time, "ff": mask.ratio_freq, "unstructured": mask.ratio, "none": 0.0,
               "tf": mask.ratio_time if mask.ratio_time == mask.ratio_freq else float("nan")}
    return by_mode[mask.mode]


def evaluate_encoder(weights: str | Path, preset: str, run_dir: str | Path, evaluate: str = "probe",
                     overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The downstream number of an encoder: the final-output linear probe, or a fine-tune (the paper's protocol).

    Args:
        preset: a key of PROBE_PRESETS / FINETUNE_PRESETS (smoke, cpu, gpu, paper).
        overrides: dotted ProbeConfig / FinetuneConfig keys (e.g. ``data.root``, ``data.task``).
    Returns:
        ``{"task", "metric", "value", "eval_config_hash"}`` (last epoch, docs/method.md Decision 5).
    """
    if evaluate == "probe":
        cfg = resolve(preset, {"heads": ("linear",), "all_layers": False, "layers": (-1,), **dict(overrides or {})},
                      presets=PROBE_PRESETS, cls=ProbeConfig)

        row = next(r for r in run_probe(cfg, str(weights), run_dir, resume=True)["results"] if r["head"] == "linear")
    elif evaluate == "finetune":
        cfg = resolve(preset, overrides, presets=FINETUNE_PRESETS, cls=FinetuneConfig)

        row = run_finetune(cfg, str(weights), run_dir, resume=True)
    else:
        raise ValueError(f"unknown evaluation {evaluate!r}; allowed: probe, finetune")
    return {"task": row["task"], "metric": row["metric"], "value": row["value"], "eval_config_hash": config_hash(cfg)}


def run_ablation(points: Sequence[tuple[Mapping[str, Any], Any]], run_root: str | Path, evaluate: str = "probe",
                 eval_preset: str = "cpu", eval_overrides: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Pre-train every grid point of :func:`ablation_grid`, evaluate it, collect one row per point.

    Each point runs in ``<run_root>/<point_name>`` and resumes there, so a stopped ablation continues where it
    stopped; ``<run_root>/results.csv`` is rewritten after every point. The evaluation reads the same corpus as
    the pre-training (``data.root``) unless ``eval_overrides`` says otherwise.
    """

    rows, run_root = [], Path(run_root)
    for overrides, cfg in points:
        run = run_root / point_name(overrides)
        summary = pretrain(cfg, run, resume=True)
        ev = evaluate_encoder(summary["weights"], eval_preset, run / evaluate,
                              evaluate, {"data.root": cfg.data.root, **dict(eval_overrides or {})})
        m = cfg.mask
        rows.append({"point": run.name, "strategy": m.mode, "layout": m.layout, "mask_ratio": mask_ratio(m),
                     "ratio_time": m.ratio_time, "ratio_freq": m.ratio_freq, "batch_size": cfg.data.batch_size,
                     "pretrain_loss": summary.get("loss"), **ev, **provenance(cfg, f"ablation {run_root.name}")})
        run_root.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(run_root / "results.csv", index=False)
    return pd.DataFrame(rows)


def pretrain_encoders(cfg: Any, modes: Sequence[str], run_root: str | Path) -> dict[str, Path]:
    """Pre-train one encoder per masking mode, identical otherwise (``<run_root>/<mode>``, resumed when re-run);
    returns mode -> weights."""

    return {m: Path(pretrain(apply_overrides(cfg, {"mask.mode": m}), Path(run_root) / m, resume=True)["weights"])
            for m in modes}


def corpus_tasks(root: str | Path) -> list[str]:
    """The labelled tasks of a built corpus (folders with a ``train.json``), sorted."""
    return sorted(p.parent.name for p in Path(root).glob("*/train.json"))


# benchmark -> (FINETUNE_PRESETS key with the paper's recipe, the config keys its paths go to)
BENCHMARKS = {"as20k": ("paper", ("data.manifest", "data.test_manifest")), "esc50": ("paper_esc50", ("data.manifest",)),
              "spc2": ("paper_spc2", ("data.manifest",))}


def finetune_jobs(preset: str, tasks: Sequence[str], overrides: Mapping[str, Any] | None = None,
                  benchmarks: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """name -> FinetuneConfig: each corpus task with ``preset``, and each benchmark of :data:`BENCHMARKS` with the
    paper's recipe when its paths are given (``{"esc50": [root]}``, ``{"as20k": [train_json, eval_json]}``,
    relative to the repository root); a benchmark without paths is skipped with a printed note.

    Args:
        tasks: task names, ``["all"]`` (every task of the preset's corpus, built on first use) or ``[]``.
        overrides: dotted FinetuneConfig keys for every job (``data.root`` only for the corpus tasks).
    """

    ov = dict(overrides or {})
    if list(tasks) == ["all"]:
        root = corpus_root(resolve(preset, ov, presets=FINETUNE_PRESETS, cls=FinetuneConfig).data)
        tasks, ov = corpus_tasks(root), {**ov, "data.root": str(root)}
    jobs = {t: resolve(preset, {"data.task": t, **ov}, presets=FINETUNE_PRESETS, cls=FinetuneConfig) for t in tasks}
    for name, paths in (benchmarks or {}).items():
        if name not in BENCHMARKS:
            raise ValueError(f"unknown benchmark {name!r}; allowed: {', '.join(BENCHMARKS)}")
        bench_preset, keys = BENCHMARKS[name]
        if not all(paths) or len(paths) != len(keys):
            print(f"{name}: skipped (give {len(keys)} path(s): {', '.join(keys)})")
            continue
        where = {k: str(repo_path(p)) for k, p in zip(keys, paths)}
        rest = {k: v for k, v in ov.items() if k != "data.root"}
        jobs[name] = resolve(bench_preset, {**where, **rest}, presets=FINETUNE_PRESETS, cls=FinetuneConfig)
    return jobs


def run_finetunes(jobs: Mapping[str, Any], checkpoint: str | Path, run_root: str | Path,
                  model: str = "audiomosaic") -> pd.DataFrame:
    """Fine-tune ``checkpoint`` on every job (each in ``<run_root>/<name>``, resumed when re-run); one
    ``table_finetune`` row per job (ESC-50: the mean over folds)."""

    rows = []
    for name, cfg in jobs.items():
        res = run_finetune(cfg, str(checkpoint), Path(run_root) / name, resume=True)
        rows.append({"model": model, "task": name, "metric": res["metric"], "value": res["value"],
                     "selection": res["selection"], "config_hash": config_hash(cfg)})
    return pd.DataFrame(rows)


# -------------------------------------------------------------------------------------------- effective rank

INFERENCE_MASKS = ("none", "unstructured", "time", "freq", "tf")


def inference_mask(kind: str, batch: int, grid: tuple[int, int], mask_cfg: MaskConfig,
                   generator: torch.Generator | None = None) -> torch.Tensor | None:
    """keep_idx (B, n_keep) of an inference-time mask, or None for ``none``.

    ``time``/``freq`` are the two pre-training views (layout and ratios from ``mask_cfg``); ``tf`` keeps a token
    only if both its time column and its frequency row survive (``time_freq_mask``); ``unstructured`` keeps
    random tokens at ``mask_cfg.ratio``.
    """
    if kind not in INFERENCE_MASKS:
        raise ValueError(f"unknown inference masking {kind!r}; allowed: {', '.join(INFERENCE_MASKS)}")
    if kind == "none":
        return None
    if kind == "tf":
        return time_freq_mask(batch, grid, mask_cfg.ratio_time, mask_cfg.ratio_freq, generator)[0]
    return single_mask(kind, batch, grid, ratio_time=mask_cfg.ratio_time, ratio_freq=mask_cfg.ratio_freq,
                       ratio=mask_cfg.ratio, layout=mask_cfg.layout, generator=generator)[0]


@torch.no_grad()
def pooled_features(model: AudioMosaic, specs: torch.Tensor, kind: str = "none",
                    mask_cfg: MaskConfig = MaskConfig(), seed: int = 0, batch_size: int = 64) -> torch.Tensor:
    """The representation ``fc_norm(mean of tokens)`` of a frozen encoder in eval mode, under masking ``kind``.

    Args:
        specs: (N, 1, T, F) normalised fbanks.
    Returns:
        (N, D) float32 features on CPU.
    """
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    out = []
    for chunk in specs.split(batch_size):
        keep = inference_mask(kind, chunk.shape[0], model.grid, mask_cfg, gen)
        tokens = model.forward_features(chunk.to(device), None if keep is None else keep.to(device))
        out.append(model.forward_head(tokens, pre_logits=True).float().cpu())
    return torch.cat(out)


def effective_rank_study(encoders: Mapping[str, AudioMosaic], specs: torch.Tensor,
                         inference_masks: Sequence[str] = ("none", "unstructured", "tf"),
                         mask_cfg: MaskConfig = MaskConfig(), seed: int = 0, batch_size: int = 64) -> pd.DataFrame:
    """Fig. 2: effective rank (docs/method.md Decision 4) of each encoder's pooled features under each inference masking.

    Args:
        encoders: pre-training masking name (e.g. ``unstructured``, ``tf``) -> frozen encoder.
        specs: (N, 1, T, F) fbanks of the evaluation clips (N >= 2).
    Returns:
        Columns pretrain_masking, inference_masking, effective_rank, n_clips, feature_dim.
    """
    rows = []
    for name, model in encoders.items():
        for kind in inference_masks:
            feats = pooled_features(model, specs, kind, mask_cfg, seed, batch_size)
            rows.append({"pretrain_masking": name, "inference_masking": kind, "effective_rank": effective_rank(feats),
                         "n_clips": feats.shape[0], "feature_dim": feats.shape[1]})
    return pd.DataFrame(rows)


def load_specs(paths: Sequence[str], frontend: FrontendConfig = FrontendConfig(), clip_seconds: float = 1.0,
               batch_size: int = 64) -> torch.Tensor:
    """Read audio files (16 kHz mono via the data loaders), cut/pad to ``clip_seconds`` -> (N, 1, T, F) fbanks."""

    n = int(round(clip_seconds * frontend.sample_rate))
    raw = [read_audio(p, frontend.sample_rate, clip_seconds) for p in paths]
    if not raw:
        raise ValueError("load_specs needs at least one audio file")
    lengths = torch.tensor([min(n, len(w)) for w in raw])  # short clips: frames past the end are zeroed
    batch = torch.from_numpy(np.stack([fit_length(w, n) for w in raw]))
    return torch.cat([fbank_batch(w, frontend, l) for w, l in zip(batch.split(batch_size), lengths.split(batch_size))])


def config_summary(cfg: Any) -> str:
    """The resolved config as indented JSON (printed by every compute notebook) plus its hash."""
    return json.dumps(to_dict(cfg), indent=1) + f"\nconfig_hash: {config_hash(cfg)}"
