"""The demonstration's result tables: per-run rows and the summary with CIs and verdicts (issue #13).

``paper_figures/results/alm_runs.csv`` holds one row per (condition, seed, metric) with provenance;
``paper_figures/results/table_alm.csv`` one row per metric: each condition's mean and 95 % t-interval over seeds,
and the paired (same seed) difference of ``pretrained`` against ``random_init`` and ``no_audio`` with its 95 %
t-interval. A verdict reads "reproduced" only when the interval excludes 0 on the side of the claim,
"contradicted" when it excludes 0 on the other side, and "inconclusive" otherwise.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from audiomosaic.repro.stats import paired_t_test, summarize

METRICS = {
    "qa_seen": "QA exact match, seen phrasings",
    "qa_novel": "QA exact match, held-out phrasings",
    "cla_seen": "classification question, exact match",
    "caption_label": "caption -> label accuracy",
    "attribute_f1": "caption attribute F1",
}
SHORT = {"qa_seen": "QA, seen\nphrasings", "qa_novel": "QA, held-out\nphrasings", "cla_seen": "class\nquestion",
         "caption_label": "caption\n-> label", "attribute_f1": "caption\nattribute F1"}  # figure labels
BASELINES = ("random_init", "no_audio")
PROVENANCE = ("config_hash", "git_sha", "machine", "source")


def run_rows(metrics: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """``run_one`` outputs (plus any provenance keys) -> long rows (condition, seed, metric, value, wall times)."""
    rows = [{"condition": m["condition"], "seed": m["seed"], "metric": k, "value": float(m[k]),
             "n_test_clips": m["n_test_clips"], "train_wall_s": round(m["train_wall_s"], 1),
             "eval_wall_s": round(m["eval_wall_s"], 1), **{p: m[p] for p in PROVENANCE if p in m}}
            for m in metrics for k in METRICS]
    return pd.DataFrame(rows)


def verdict(lo: float, hi: float) -> str:
    """``reproduced`` (interval above 0), ``contradicted`` (below 0) or ``inconclusive``."""
    if lo > 0:
        return "reproduced"
    if hi < 0:
        return "contradicted"
    return "inconclusive"


def summary_table(runs: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """One row per metric: per-condition mean and CI half-width; paired differences of ``pretrained``
    against each baseline present, with their CI and verdict (needs >= 2 seeds for an interval)."""
    out = []
    for metric, label in METRICS.items():
        df = runs[runs.metric == metric]
        if df.empty:
            continue
        row: dict[str, Any] = {"metric": metric, "description": label, "n_seeds": int(df.seed.nunique())}
        for cond, g in df.groupby("condition", sort=False):
            s = summarize(g.sort_values("seed").value.tolist(), confidence)
            row[f"{cond}_mean"], row[f"{cond}_ci95"] = s.mean, s.half_width
        by = df.pivot_table(index="seed", columns="condition", values="value")
        for base in BASELINES:
            if "pretrained" in by and base in by and len(by.dropna(subset=["pretrained", base])) >= 2:
                pair = by.dropna(subset=["pretrained", base])
                t = paired_t_test(pair["pretrained"].tolist(), pair[base].tolist(), confidence)
                row.update({f"diff_vs_{base}": t.mean_diff, f"diff_vs_{base}_lo": t.ci_lo,
                            f"diff_vs_{base}_hi": t.ci_hi, f"verdict_vs_{base}": verdict(t.ci_lo, t.ci_hi)})
        out.append(row)
    return pd.DataFrame(out)


def load_summary(results_dir: str | Path) -> pd.DataFrame | None:
    """``<results_dir>/table_alm.csv`` (None, with a printed note, when it is not committed yet)."""
    path = Path(results_dir) / "table_alm.csv"
    if not path.is_file():
        print(f"table_alm: {path} is missing -- skipped (run python -m audiomosaic alm demo)")
        return None
    return pd.read_csv(path)


def summary_markdown(summary: pd.DataFrame, digits: int = 3) -> str:
    """The summary as a markdown table: mean ± CI half-width per condition, then each paired difference
    [95 % interval] with its verdict."""
    conds = [c for c in ("pretrained", "random_init", "no_audio") if f"{c}_mean" in summary]
    head = ["metric", *[c.replace("_", " ") for c in conds]]
    head += [f"pretrained − {b.replace('_', ' ')}" for b in BASELINES if f"diff_vs_{b}" in summary]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in summary.iterrows():
        cells = [METRICS[r["metric"]]] + [f"{r[f'{c}_mean']:.{digits}f} ± {r[f'{c}_ci95']:.{digits}f}" for c in conds]
        cells += [f"{r[f'diff_vs_{b}']:+.{digits}f} [{r[f'diff_vs_{b}_lo']:+.{digits}f}, {r[f'diff_vs_{b}_hi']:+.{digits}f}] "
                  f"{r[f'verdict_vs_{b}']}" for b in BASELINES if f"diff_vs_{b}" in summary]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
