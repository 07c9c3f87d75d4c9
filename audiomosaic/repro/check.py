"""Does a committed number come back when its stated command runs again? (issue #6)

``python -m audiomosaic repro --check --suite main erank --conditions tf_paper random_init --seeds 0`` runs the
chosen (suite, condition, seed) cells from scratch: a fresh run root (so every encoder is pre-trained again) and a
scratch copy of the result tables. It then compares every regenerated number with the committed one and writes the
comparison to ``<out>/regeneration_check.csv`` (one row per number, replacing earlier checks of the same number).

"Within noise" means |regenerated - committed| <= max(k x s, atol). Here s is the standard deviation of the same
cell's *other* seeds in the committed table (same suite, condition and task; the checked seed is left out so that a
wrong number cannot widen its own tolerance), k = 2 by default, and atol = 0.001 is a floor. On the machine and code that wrote a row, a seeded one-thread run repeats it
bit for bit. Elsewhere, float differences change the SGD trajectory, so only seed-sized agreement can be asked for.
"""
from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from audiomosaic.repro import decide
from audiomosaic.repro.report import repro_rows
from audiomosaic.repro.results import append_results
from audiomosaic.repro.suites import TABLE_KEYS, run_suite

CHECK_TABLE = "regeneration_check"
VALUE_COLUMN = {"fig2_effective_rank": "effective_rank"}  # every other table holds its number in "value"


def keys(table: str) -> list[str]:
    """The columns that identify one number of ``table`` (see :data:`audiomosaic.repro.suites.TABLE_KEYS`)."""
    return ["suite", "condition", "seed", *TABLE_KEYS[table]]


def compare(table: str, committed: pd.DataFrame, fresh: pd.DataFrame, k: float = 2.0,
            atol: float = 1e-3) -> pd.DataFrame:
    """One row per number of ``fresh``: the committed value, the regenerated one and whether they agree.

    Args:
        table: the result table both frames come from (it sets the key and value columns).
        committed: that table's committed rows (every seed, for the seed-to-seed spread).
        fresh: the regenerated rows.
        k, atol: tolerance = max(k x s.d. of the cell's other seeds, atol).

    Returns:
        Columns: table, the key columns, committed, regenerated, abs_diff, seed_sd, n_seeds, tolerance,
        within_noise, committed_git_sha, git_sha, machine, wall_s. A number that has no committed row has NaN in
        committed and within_noise False.
    """
    key, value = keys(table), VALUE_COLUMN.get(table, "value")
    cell = [c for c in key if c != "seed"]
    old = committed[[*key, value, "git_sha"]].rename(columns={value: "committed", "git_sha": "committed_git_sha"}) \
        if not committed.empty else pd.DataFrame(columns=[*key, "committed", "committed_git_sha"])
    new = fresh[[*key, value, "git_sha", "machine", "wall_s"]].rename(columns={value: "regenerated"})
    m = new.merge(old, on=key, how="left")  # NaN keys (fig3's layer of weighted heads) match NaN
    # the spread of the *other* seeds: a wrong committed number must not widen its own tolerance
    others = m[key].merge(old[[*key, "committed"]], on=cell, how="inner", suffixes=("", "_other"))
    others = others[others["seed"] != others["seed_other"]]
    spread = (others.groupby(key, dropna=False)["committed"].agg(seed_sd="std", n_seeds="count").reset_index()
              if not others.empty else pd.DataFrame(columns=[*key, "seed_sd", "n_seeds"]))
    m = m.merge(spread, on=key, how="left")
    m["abs_diff"] = (m["regenerated"] - m["committed"]).abs()
    m["tolerance"] = np.maximum(k * m["seed_sd"].fillna(0.0).astype(float), atol)
    m["within_noise"] = m["abs_diff"].le(m["tolerance"]) & m["committed"].notna()
    m.insert(0, "table", table)
    cols = ["table", *key, "committed", "regenerated", "abs_diff", "seed_sd", "n_seeds", "tolerance",
            "within_noise", "committed_git_sha", "git_sha", "machine", "wall_s"]
    return m[cols]


def check_key() -> list[str]:
    """The columns that identify a number in ``regeneration_check.csv``: the union over every table's keys (a
    table's rows leave the others' columns empty), so rows of different tables never collapse into one."""
    extra = dict.fromkeys(c for k in TABLE_KEYS.values() for c in k)
    return ["table", "suite", "condition", "seed", *extra]


def record_check(out: Path, fresh: Path, k: float = 2.0, atol: float = 1e-3) -> pd.DataFrame:
    """Compare every table regenerated in ``fresh`` with the committed one in ``out``; append the comparison to
    ``<out>/regeneration_check.csv`` (replacing earlier checks of the same numbers) and return it."""
    frames = []
    for path in sorted(Path(fresh).glob("*.csv")):
        frames.append(compare(path.stem, repro_rows(out, path.stem), pd.read_csv(path), k, atol))
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    key = check_key()
    for col in key:
        if col not in df.columns:
            df[col] = np.nan
    append_results(df.to_dict("records"), Path(out) / f"{CHECK_TABLE}.csv", key=tuple(key))
    return df


def run_check(ctx, suites: Sequence[str], conditions: Sequence[str], scratch: Path, k: float = 2.0,
              atol: float = 1e-3) -> pd.DataFrame:
    """Re-run ``suites`` (restricted to ``conditions`` and ``ctx.seeds``) under ``scratch`` and compare.

    ``ctx`` is the :class:`audiomosaic.repro.suites.Context` of the committed tables (``ctx.out``); the re-run writes only
    under ``scratch/<time stamp>``. Appends the comparison to ``<ctx.out>/regeneration_check.csv`` and returns it.
    """
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"  # parallel checks never share a scratch folder
    fresh_ctx = replace(ctx, out=scratch / stamp / "results", run_root=scratch / stamp / "runs")
    for suite in suites:
        if suite in decide.SUITES:  # the pre-registered design: its preset and tasks are fixed, only seeds apply
            decide.run(suite, fresh_ctx, tuple(conditions))
        else:
            run_suite(suite, fresh_ctx, conditions)
    return record_check(ctx.out, fresh_ctx.out, k, atol)


def summary(df: pd.DataFrame) -> str:
    """One line per table: numbers checked, how many are within noise, the largest |difference| and the number
    furthest outside its tolerance (if any)."""
    if df.empty:
        return "regeneration check: nothing was regenerated"
    lines = []
    for table, g in df.groupby("table", sort=False):
        big = g.loc[g["abs_diff"].idxmax()]
        line = (f"{table}: {int(g['within_noise'].sum())}/{len(g)} within noise; largest |diff| "
                f"{big['abs_diff']:.4g} ({big['condition']} seed {int(big['seed'])})")
        out = g[~g["within_noise"]]
        if not out.empty:
            worst = out.loc[(out["abs_diff"] / out["tolerance"]).idxmax()]
            line += (f"; furthest outside: |diff| {worst['abs_diff']:.4g} vs tolerance {worst['tolerance']:.4g} "
                     f"({worst['condition']} seed {int(worst['seed'])})")
        lines.append(line)
    return "\n".join(lines)
