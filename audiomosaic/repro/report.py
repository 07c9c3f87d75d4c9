"""The paper's claims against the reproduction tables: ``claims.csv`` and the README's ``## Claims`` section.

Everything here is computed from the rows that :mod:`audiomosaic.repro.suites` appended to ``paper_figures/results/``
(rows with a ``suite`` column; other producers' rows are ignored). Each claim compares two conditions over the
seeds that both have: per seed the metric is averaged over tasks (pairs: same seed, hence the same initial weights
and data order), and over (seed, task) pairs. Tests (:mod:`audiomosaic.repro.stats`): the exact Wilcoxon signed-rank
test over (seed, task) pairs decides "significant" (alpha 0.05, two-sided, Holm-adjusted over the claims); the
paired t-test over seeds and its 95% interval of the difference are reported beside it.

Verdicts use a fixed vocabulary (:func:`verdict`): *reproduced* (the paper's direction, Holm-significant, and the
interval of the difference excludes 0 on that side), *contradicted* (the interval excludes the paper's direction,
or lies inside ±``margin``: equivalence by two one-sided tests at the 2.5 % level each, a margin fixed in the claim
before the runs) and *inconclusive* (everything else).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from audiomosaic.lab.analysis import markdown_table
from audiomosaic.repro.primary import primary_claims
from audiomosaic.repro.stats import holm, paired_t_test, summarize, verdict, wilcoxon_signed_rank

ALPHA = 0.05
RUN = "python -m audiomosaic repro --threads 1 --seeds 0 1 2"
REPORT = "python -m audiomosaic repro --no-run --report"
PILOT = "pilot (216 steps; cannot decide)"


@dataclass(frozen=True)
class Claim:
    """Condition ``a`` should beat ``b`` (``higher``: on the metric's larger side) in ``table``."""

    claim: str
    paper: str
    table: str
    a: str
    b: str
    command: str
    value: str = "value"
    where: tuple[tuple[str, Any], ...] = ()  # extra row filters, e.g. (("inference_masking", "none"),)
    higher: bool = True
    arm: str = "condition"  # the column that holds a and b (fig4a: "strategy")
    pair_on: tuple[str, ...] = ()  # more pairing columns beside (seed, task), e.g. ("mask_ratio",)
    # equivalence margin on the task-averaged difference, fixed before the runs; None: never called equivalent.
    # The pilot suites below had none (equivalence would be post hoc); the decisive ones are in repro.decide.
    margin: float | None = None


CLAIMS = (
    Claim("1. TF-masked pairs give better linear-probe features than unstructured masking",
          "TF > unstructured (Fig. 4a, tables)", "table_probe", "tf_paper", "unstructured",
          f"{RUN} --suite main --conditions tf_paper unstructured"),
    Claim("1. TF beats time+time masking", "TF > tt (Fig. 4a)", "table_probe", "tf_paper", "tt",
          f"{RUN} --suite main --conditions tf_paper tt"),
    Claim("1. TF beats freq+freq masking", "TF > ff (Fig. 4a)", "table_probe", "tf_paper", "ff",
          f"{RUN} --suite main --conditions tf_paper ff"),
    Claim("1. (floor) TF pre-training beats a random-init encoder", "implicit", "table_probe", "tf_paper",
          "random_init", f"{RUN} --suite main --conditions tf_paper random_init"),
    Claim("1. TF transfers better under fine-tuning than unstructured", "TF > unstructured (Fig. 4, fine-tune)",
          "table_finetune", "tf_paper", "unstructured", f"{RUN} --suite finetune"),
    *(Claim(f"1. TF beats {b} at equal mask ratios (paired per ratio)", f"TF > {b} at every ratio (Fig. 4a)",
            "fig4a_masking_ratio", "tf", b, f"{RUN} --suite strategy", arm="strategy", pair_on=("mask_ratio",))
      for b in ("unstructured", "tt", "ff")),
    Claim("(kit) the paper's mask geometry does at least as well as the released code's transposed one",
          "docs/method.md §5.3 / Decision 1", "table_probe", "tf_paper_6x8", "tf_reference_6x8", f"{RUN} --suite layout"),
    Claim("2. time 0.6 / freq 0.4 is a good choice (vs the best other point of the grid that ran)",
          "0.6/0.4 best (Fig. 4b)", "fig4b_tf_ratio_grid", "tf_paper", "best_other", f"{RUN} --suite ratio"),
    Claim("3. larger pre-training batches help (128 vs 32)", "larger batch better (Fig. 4c)",
          "fig4c_batch_size", "tf_bs128", "tf_bs32", f"{RUN} --suite batch --conditions tf_bs32 tf_bs128"),
    Claim("4. TF pre-training keeps a higher effective rank (no inference masking)", "TF > unstructured (Fig. 2)",
          "fig2_effective_rank", "tf_paper", "unstructured", f"{RUN} --suite erank", "effective_rank",
          (("inference_masking", "none"),)),
    Claim("4. ... under unstructured inference-time masking", "TF > unstructured (Fig. 2)", "fig2_effective_rank",
          "tf_paper", "unstructured", f"{RUN} --suite erank", "effective_rank",
          (("inference_masking", "unstructured"),)),
    Claim("4. ... under TF inference-time masking", "TF > unstructured (Fig. 2)", "fig2_effective_rank",
          "tf_paper", "unstructured", f"{RUN} --suite erank", "effective_rank", (("inference_masking", "tf"),)),
)


def repro_rows(out: str | Path, table: str) -> pd.DataFrame:
    """The rows of ``<out>/<table>.csv`` written by the repro suites (empty frame if none)."""
    path = Path(out) / f"{table}.csv"
    if not path.is_file():
        return pd.DataFrame()
    df = pd.read_csv(path)
    return df[df["suite"].notna()] if "suite" in df.columns else pd.DataFrame()


def _filter(df: pd.DataFrame, claim: Claim) -> pd.DataFrame:
    if df.empty:
        return df
    for col, val in claim.where:
        df = df[df[col] == val]
    return df


def _best_other(df: pd.DataFrame, claim: Claim) -> str | None:
    """The grid point (other than ``claim.a``) with the best mean over seeds and tasks."""
    means = df[df[claim.arm] != claim.a].groupby(claim.arm)[claim.value].mean()
    if means.empty:
        return None
    return str(means.idxmax() if claim.higher else means.idxmin())


def pairs(df: pd.DataFrame, a: str, b: str, value: str, arm: str = "condition",
          pair_on: tuple[str, ...] = ()) -> pd.DataFrame:
    """Wide (seed, task, *pair_on) x {a, b} table of the pairs both arms have."""
    wide = df[df[arm].isin([a, b])].pivot_table(index=["seed", "task", *pair_on], columns=arm, values=value,
                                                aggfunc="mean")
    return wide.dropna() if {a, b} <= set(wide.columns) else pd.DataFrame()


def evaluate(claim: Claim, out: str | Path) -> dict[str, Any]:
    """One claims.csv row: both arms' mean ± CI over seeds (task-averaged), the difference, tests, verdict."""
    row: dict[str, Any] = {"claim": claim.claim, "paper": claim.paper, "table": claim.table, "a": claim.a,
                           "b": claim.b, "metric": claim.value, "command": f"{claim.command} && {REPORT}"}
    df = _filter(repro_rows(out, claim.table), claim)
    b = _best_other(df, claim) if claim.b == "best_other" and not df.empty else claim.b
    wide = (pairs(df, claim.a, b, claim.value, claim.arm, claim.pair_on) if b is not None and not df.empty
            else pd.DataFrame())
    if wide.empty:
        return {**row, "verdict": "not run", "n_seeds": 0, "n_pairs": 0}
    row["b"] = b
    if "metric" in df.columns:
        row["metric"] = "/".join(sorted(df["metric"].astype(str).unique()))
    per_seed = wide.groupby(level="seed").mean()  # task-averaged, one value per seed
    sa, sb = summarize(per_seed[claim.a]), summarize(per_seed[b])
    sign = 1.0 if claim.higher else -1.0
    w = wilcoxon_signed_rank(wide[claim.a], wide[b])
    row.update({"n_seeds": len(per_seed), "n_pairs": len(wide), "tasks": " ".join(sorted(wide.index.unique("task"))),
                "a_mean": sa.mean, "a_ci95": sa.half_width, "b_mean": sb.mean, "b_ci95": sb.half_width,
                "diff_mean": sa.mean - sb.mean, "wilcoxon_W": w.statistic, "wilcoxon_p": w.p_value})
    if len(per_seed) >= 2:
        t = paired_t_test(per_seed[claim.a], per_seed[b])
        row.update({"diff_ci_lo": t.ci_lo, "diff_ci_hi": t.ci_hi, "t_stat": t.statistic, "t_p": t.p_value})
    row["agrees"] = bool(sign * row["diff_mean"] > 0)
    return row


def claims_table(out: str | Path) -> pd.DataFrame:
    """Evaluate every :data:`CLAIMS` entry; Holm-adjust the Wilcoxon p-values of the claims that ran."""
    rows = [evaluate(c, out) for c in CLAIMS]
    ran = [i for i, r in enumerate(rows) if r.get("verdict") != "not run"]
    for i, p in zip(ran, holm([rows[i]["wilcoxon_p"] for i in ran]) if ran else []):
        rows[i]["p_holm"] = p
    for r, c in zip(rows, CLAIMS):
        r["verdict"] = verdict(r, c.higher, c.margin)
        r["margin"] = c.margin
    return pd.DataFrame(rows)


def _fmt(mean: float, ci: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f}" if ci is None or math.isnan(ci) else f"{mean:.{digits}f} ± {ci:.{digits}f}"


def condition_table(out: str | Path, table: str, value: str, by: tuple[str, ...]) -> pd.DataFrame:
    """Mean ± 95% t-interval over seeds of each (``by``, task) cell, as strings (n in brackets)."""
    df = repro_rows(out, table)
    if df.empty:
        return df
    cells = {}
    for key, grp in df.groupby([*by, "task"], sort=False, dropna=False):  # fig3: no layer for weighted heads
        s = summarize(grp[value])
        cells[key] = f"{_fmt(s.mean, s.half_width)} (n={s.n})"
    idx = pd.MultiIndex.from_tuples(list(cells), names=[*by, "task"])
    return pd.Series(cells.values(), index=idx).unstack("task")


def cost_summary(out: str | Path) -> str:
    """Median wall times per pre-training and per evaluation, and the machine, from the tables' own columns."""
    frames = [repro_rows(out, t) for t in ("table_probe", "fig4a_masking_ratio", "fig4b_tf_ratio_grid",
                                           "fig4c_batch_size")]
    df = pd.concat([f for f in frames if not f.empty], ignore_index=True) if any(not f.empty for f in frames) else None
    if df is None:
        return "No run yet."
    pre = df[df["pretrain_wall_s"] > 0].drop_duplicates(["config_hash"])["pretrain_wall_s"]
    machines = "; ".join(sorted(df["machine"].astype(str).unique()))
    return (f"Measured cost per run on {machines}: pre-training median {pre.median():.0f} s "
            f"(n={len(pre)}), linear probe of one task median {df['eval_wall_s'].median():.0f} s "
            f"(n={len(df)}, features cached per task).")


def _claims_markdown(claims: pd.DataFrame) -> str:
    head = ("| Claim (paper) | This code, small scale: A vs B, mean ± 95% CI over seeds | Difference A − B "
            "[95% CI] | Tests (n) | Verdict | Regenerate |\n|---|---|---|---|---|---|\n")
    lines = []
    for r in claims.to_dict("records"):
        cmd = f"`{r['command']}`"
        if r["verdict"] == "not run":
            lines.append(f"| {r['claim']} ({r['paper']}) | not run in this session | – | – | not run | {cmd} |")
            continue
        diff = f"{r['diff_mean']:+.3f}"
        if not math.isnan(r.get("diff_ci_lo", math.nan)):
            diff += f" [{r['diff_ci_lo']:+.3f}, {r['diff_ci_hi']:+.3f}]"
        tests = (f"Wilcoxon signed-rank exact over (seed, task) pairs: p={r['wilcoxon_p']:.3g}, Holm "
                 f"p={r['p_holm']:.3g} (n={r['n_pairs']})")
        if not math.isnan(r.get("t_p", math.nan)):
            tests += f"; paired t over seeds: p={r['t_p']:.3g} (n={r['n_seeds']})"
        lines.append(f"| {r['claim']} ({r['paper']}) | {r['a']}: {_fmt(r['a_mean'], r['a_ci95'])} vs {r['b']}: "
                     f"{_fmt(r['b_mean'], r['b_ci95'])} ({r['metric']}, mean over {r['tasks']}) | {diff} | {tests} "
                     f"| {r['verdict']} | {cmd} |")
    return head + "\n".join(lines) + "\n"


def primary_markdown(primary: pd.DataFrame, out: str | Path | None = None) -> str:
    """The pre-registered primary comparisons as a markdown table (rows that have not run say so), then, with
    ``out``, every arm's numbers per task (:func:`decide_arms_markdown`)."""
    lines = ["### Primary comparisons (pre-registered; `claims.csv` rows with analysis = primary)\n",
             "| comparison | evaluation (tasks averaged) | seeds | A | B | A − B [95% CI] | Holm p (paired t) "
             "| s.d. of A − B → seeds for 0.02 | margin | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in primary.to_dict("records"):
        tasks = f" ({r['tasks']})" if isinstance(r.get("tasks"), str) else ""
        if r["n_seeds"] < 2:
            means, diff, p, sd = "— | —", "—", "—", "—"
        else:
            means = f"{r['a_mean']:.3f} | {r['b_mean']:.3f}"
            diff = f"{r['diff_mean']:+.3f} [{r['diff_ci_lo']:+.3f}, {r['diff_ci_hi']:+.3f}]"
            p = f"{r['p_holm']:.3g}"
            sd = f"{r['sd_diff']:.4f} → {int(r['seeds_needed'])}"
        lines.append(f"| {r['a']} vs {r['b']} | {r['probe']}{tasks} | {r['n_seeds']} | {means} | {diff} | {p} | "
                     f"{sd} | ±{r['margin']} | {r['verdict']} |")
    text = "\n".join(lines) + "\n"
    return text + ("\n" + decide_arms_markdown(out) if out is not None else "")


def decide_arms_markdown(out: str | Path) -> str:
    """Every arm of the decisive reproduction per task: mean ± 95% CI over seeds (n), and its gates."""
    parts = []
    for table, cols in (("table_decide", ("task", "probe")), ("table_decide_finetune", ("task",))):
        path = Path(out) / f"{table}.csv"
        if not path.is_file():
            continue
        df = pd.read_csv(path)
        df = df[df["suite"].isin(("decide", "decide_finetune"))]
        rows = []
        for arm, g in df.groupby("model", sort=False):
            row: dict[str, Any] = {"arm": arm}
            gates = g.drop_duplicates("seed")["gate_pass"]
            row["gate passed (seeds)"] = ("— (untrained)" if gates.isna().all()
                                          else f"{int((gates.astype(str) == 'True').sum())}/{len(gates)}")
            for key, cell in g.groupby(list(cols), sort=False):
                s = summarize(cell["value"].to_numpy())
                name = " ".join(map(str, key if isinstance(key, tuple) else (key,)))
                row[name] = f"{_fmt(s.mean, s.half_width)} (n={s.n})"
            rows.append(row)
        title = "probes (mean of the last 5 epochs)" if table == "table_decide" else "fine-tuning (last epoch)"
        parts.append(f"Arms, {title}, `{table}.csv`:\n\n" + markdown_table(pd.DataFrame(rows)) + "\n")
    return "\n".join(parts)


def claims_markdown(out: str | Path, claims: pd.DataFrame, primary: pd.DataFrame | None = None) -> str:
    """The ``## Claims`` section: the primary comparisons, then the pilot's claims table, per-condition tables and
    cost; every number read from ``out``."""

    parts = ["## Claims\n", *([primary_markdown(primary, out)] if primary is not None else []),
             "### Pilot (216 optimiser steps per encoder)\n",
             "**Pilot, not evidence.** These suites pre-train for 216 optimiser steps: every one of their contrastive "
             "encoders ends with an NT-Xent loss at or above ln(2B − 1) = 4.84, the score of a constant predictor, "
             "so none of them has learned the contrastive task, and kws35 probes sit near chance. Whatever the "
             "verdicts say, these rows cannot decide a claim of the paper in either direction; the reproduction "
             "that can is pre-registered in \"Reproduction that can decide\" above.\n",
             "Small-scale pilot with this code's own runs (`audiomosaic.repro.suites`, preset `repro_cpu`: ViT-nano "
             "on 1-s clips (8 × 8 patch grid), 2 epochs over the `default` corpus' 6.9k-clip pre-training pool, "
             "batch 64; linear probes (probe preset `cpu`, last epoch) on the held-out groups of kws35, inst11 and "
             "drums7). Seeds pair conditions (same initial weights and data order). Unstructured masking drops "
             "0.5625 of the tokens, the same mean number of visible tokens (28 of 64) as TF 0.6/0.4. This is far "
             "from the paper's scale (ViT-B, AudioSet-2M, 400 epochs): a claim that does not show here is not "
             "refuted at scale, and one that does is only consistent with it. Rows: `paper_figures/results/*.csv` "
             "(columns `suite`, `condition`, `seed`, `config_hash`, `git_sha`, `machine`, `wall_s`, `source`); "
             "the verdicts below are recomputed from them by the `Regenerate` command's `--report` step.\n",
             cost_summary(out) + "\n", _claims_markdown(claims)]
    tables = (("table_probe", "value", ("condition",), "Linear probe accuracy per task"),
              ("fig2_effective_rank", "effective_rank", ("pretrain_masking", "inference_masking"),
               "Effective rank of pooled test-split features (docs/method.md Decision 4)"),
              ("fig3_layerwise_probe", "value", ("model", "probe", "layer"), "Layer-wise probes of the TF encoder"),
              ("fig4a_masking_ratio", "value", ("strategy", "mask_ratio"),
               "Masking strategy x mask ratio, linear probe accuracy"),
              ("fig4b_tf_ratio_grid", "value", ("ratio_time", "ratio_freq"), "TF ratio grid, linear probe accuracy"),
              ("fig4c_batch_size", "value", ("batch_size",), "Pre-training batch size, linear probe accuracy"),
              ("table_finetune", "value", ("condition",), "Fine-tuning accuracy"))
    for table, value, by, title in tables:
        t = condition_table(out, table, value, by)
        if not t.empty:
            parts.append(f"### {title} (`{table}.csv`, mean ± 95% t-interval over seeds)\n\n{markdown_table(t)}")
    batch = repro_rows(out, "fig4c_batch_size")
    steps = "" if batch.empty else " (" + ", ".join(
        f"batch {int(b)}: {int(n)} steps" for b, n in batch.groupby("batch_size")["pretrain_steps"].max().items()) + ")"
    parts.append(NOTES.format(steps=steps))
    parts.append(check_markdown(out))
    parts.append(PAPER_SCALE)
    parts.append("Mask geometry: on the 8 × 8 grid of 1-s clips the reference layout's masks and sin-cos table "
                 "coincide with the paper layout's (checked in `tests/test_repro.py`), so `tf_reference` would "
                 "repeat `tf_paper` exactly. The `layout` suite therefore compares the two on a 6 × 8 grid (96 "
                 "frames of the same clips), where the released code's transposed (8, 6) view changes which tokens "
                 "each view keeps and where the sin-cos positions go. Claims marked `not run` have a suite but no "
                 "rows yet.\n")
    return "\n".join(parts)


NOTES = """Protocol notes. Batch sizes are compared at equal epochs with an unscaled lr, as in the paper's recipe
(docs/method.md §7), so a larger batch also means fewer optimiser steps{steps}.
Effective rank: pooled `fc_norm` features of the frozen encoder on each task's test split; inference-time masking
`unstructured` keeps 28 of 64 tokens at random, `tf` keeps the tokens of 3 of 8 time columns and 4 of 8 frequency
rows (12 tokens; `audiomosaic.lab.analysis.inference_mask`); `random_init` rows are an untrained encoder's, for scale.
Probes train on cached features of the unmasked, un-augmented clips (`audiomosaic.train.probe`), 60 epochs, last epoch.
Fine-tuning (`table_finetune.csv`): fine-tune preset `repro_cpu`, i.e. inst11, 10 epochs, batch 32, blr 3e-2, layer
decay 0.75, SpecAugment 24/24, token masking 0.2/0.2, no mixup; last epoch. The authors' SPC-style recipe (blr 1e-3,
mixup) stayed at chance-level training loss at this model size, so it could not rank the encoders.
Fig. 4a (`fig4a_masking_ratio.csv`): each strategy drops the mask ratio r of its own units (tf: time columns in one
view and frequency rows in the other, tt: time columns in both, ff: frequency rows in both, unstructured: tokens), so
every view keeps about (1 − r) of the 64 tokens; the per-ratio claims pair (seed, task, ratio).
"""

PAPER_SCALE = """The paper's benchmark numbers need AudioSet / ESC-50 / Speech Commands and ViT-B pre-training on
AudioSet-2M; none of them was run here, so none is reproduced (targets from docs/method.md §11, not results):

| claim (paper) | paper value | this code |
|---|---|---|
| AS-20K / AS-2M fine-tune mAP | 42.5 / 50.2 | not run (no AudioSet offline) |
| ESC-50 accuracy (5 folds) | 97.5 | not run |
| SPC-2 / SPC-1 accuracy | 98.4 / 99.0 | not run |
| AS-20K linear / attentive probe mAP | 29.40 / 33.55 | not run |
"""


def check_markdown(out: str | Path) -> str:
    """The ``--check`` results (``regeneration_check.csv``): one line per re-run (table, suite, condition, seed)."""
    path = Path(out) / "regeneration_check.csv"
    if not path.is_file():
        return ("Regeneration check: not run yet (`python -m audiomosaic repro --check --suite ... --conditions ... "
                "--seeds ...`).\n")
    df = pd.read_csv(path)
    rows = []
    for (table, suite, cond, seed), g in df.groupby(["table", "suite", "condition", "seed"], sort=False):
        rows.append({"table": table, "suite": suite, "condition": cond, "seed": int(seed), "numbers": len(g),
                     "within noise": int(g["within_noise"].sum()), "max abs diff": f"{g['abs_diff'].max():.4g}",
                     "tolerance (min)": f"{g['tolerance'].min():.3g}",
                     "committed by": " ".join(sorted(g["committed_git_sha"].astype(str).unique())),
                     "re-run by": " ".join(sorted(g["git_sha"].astype(str).unique())),
                     "machine": " ".join(sorted(g["machine"].astype(str).unique()))})
    t = pd.DataFrame(rows)
    head = ("### Regeneration check (`regeneration_check.csv`)\n\n`python -m audiomosaic repro --check` re-ran these "
            "cells from scratch (fresh run root: the encoder was pre-trained again) and compared each number with "
            "the committed one; within noise = |difference| <= max(2 x s.d. of the cell's other seeds, 0.001). "
            "`committed by` is the commit that wrote the committed row, `re-run by` the commit the check ran.\n\n")
    lines = ["| " + " | ".join(t.columns) + " |", "|" + "---|" * len(t.columns)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in t.itertuples(index=False)]
    return head + "\n".join(lines) + "\n"


def replace_section(text: str, section: str, heading: str = "## Claims") -> str:
    """``text`` with its ``heading`` section (up to the next ``## `` heading) replaced, or ``section`` appended."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, l in enumerate(lines) if l.rstrip() == heading), None)
    if start is None:
        return text.rstrip("\n") + ("\n\n" if text.strip() else "") + section
    end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
    tail = "".join(lines[end:])
    return "".join(lines[:start]) + section + ("\n" + tail if tail else "")


def write_report(out: str | Path, readme: Path | None) -> str:
    """Write ``<out>/claims.csv`` and (if ``readme``) its ``## Claims`` section; returns the section."""
    claims = claims_table(out)
    primary = primary_claims(out)
    Path(out).mkdir(parents=True, exist_ok=True)
    pd.concat([primary, claims.assign(analysis=PILOT)], ignore_index=True).to_csv(Path(out) / "claims.csv",
                                                                                 index=False)
    section = claims_markdown(out, claims, primary)
    if readme is not None:
        old = readme.read_text() if readme.is_file() else "# paper_figures\n"
        readme.parent.mkdir(parents=True, exist_ok=True)
        readme.write_text(replace_section(old, section))
    return section
