"""The committed result tables that ``90_paper_figures`` reads (``paper_figures/results/<name>.csv``).

Every table has the data columns of :data:`RESULTS` plus the provenance columns of :data:`PROVENANCE` (who made
the numbers: a run of this code with its git SHA, machine, seed and config hash, or a labelled external source).
The compute notebooks append rows with :func:`record_results`; figures and tables read them with
:func:`load_result` / :func:`result_table`, which say which file is missing instead of inventing anything.
"""
from __future__ import annotations

import fcntl
import os
import platform
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import torch

from audiomosaic.config import config_hash
from audiomosaic.train.checkpoint import git_sha

PROVENANCE = ("source", "git_sha", "machine", "seed", "config_hash")
# table name (file ``<name>.csv``) -> its data columns; every table also has the PROVENANCE columns.
RESULTS: dict[str, tuple[str, ...]] = {
    "fig2_effective_rank": ("task", "pretrain_masking", "inference_masking", "effective_rank"),
    "fig3_layerwise_probe": ("model", "task", "probe", "layer", "metric", "value"),
    "fig4a_masking_ratio": ("strategy", "mask_ratio", "task", "metric", "value"),
    "fig4b_tf_ratio_grid": ("ratio_time", "ratio_freq", "task", "metric", "value"),
    "fig4c_batch_size": ("batch_size", "task", "metric", "value"),
    "table_finetune": ("model", "task", "metric", "value"),
    "table_probe": ("model", "task", "probe", "metric", "value"),
    # spoof detection (python -m audiomosaic spoof): per track, head, init, test set (generator "all" or one), metric
    # (eer, eer_interp, auc) and epoch choice (last, best_dev)
    "table_spoof": ("track", "head", "model", "test_set", "generator", "metric", "value", "epoch_choice"),
    # audio-language demonstration (audiomosaic.alm.demo): one row per condition, seed and metric; its summary
    # with CIs and verdicts is table_alm.csv (audiomosaic.alm.report.summary_table)
    "alm_runs": ("condition", "metric", "value"),
    # the pre-registered reproduction (audiomosaic.repro.decide): probes, fine-tunes, learning curves; gate columns
    "table_decide": ("model", "task", "probe", "metric", "value", "gate_pass"),
    "table_decide_finetune": ("model", "task", "metric", "value", "gate_pass"),
    "fig_learning_curve": ("model", "task", "step", "metric", "value"),
}
TABLES = ("table_finetune", "table_probe")


def load_result(results_dir: str | Path, name: str) -> pd.DataFrame | None:
    """Read the committed table ``<results_dir>/<name>.csv``; None (with a printed note) when it is missing.

    Raises:
        ValueError: unknown table name, or a file that lacks required columns (named).
    """
    if name not in RESULTS:
        raise ValueError(f"unknown result table {name!r}; allowed: {', '.join(RESULTS)}")
    path = Path(results_dir) / f"{name}.csv"
    if not path.is_file():
        print(f"{name}: {path} is missing -- skipped (pending: no committed results yet)")
        return None
    df = pd.read_csv(path)
    missing = [c for c in (*RESULTS[name], *PROVENANCE) if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {list(RESULTS[name]) + list(PROVENANCE)}")
    return df


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A GitHub-markdown table of ``df`` (index included when named)."""
    d = df.reset_index() if any(n is not None for n in df.index.names) else df
    def cell(v: Any) -> str:
        return "" if pd.isna(v) else (format(v, floatfmt) if isinstance(v, float) else str(v))
    rows = [[str(c) for c in d.columns]] + [[cell(v) for v in r] for r in d.itertuples(index=False)]
    lines = ["| " + " | ".join(r) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("---" for _ in d.columns) + "|")
    return "\n".join(lines) + "\n"


def result_table(name: str, results_dir: str | Path) -> pd.DataFrame | None:
    """A result table pivoted for reading: one row per model (and probe), one column per task/metric, each value
    the mean over the table's seeds (``attrs``: ``source``, ``seeds``)."""
    df = load_result(results_dir, name)
    if df is None:
        return None
    index = [c for c in ("model", "probe") if c in RESULTS[name]]
    table = df.pivot_table(index=index, columns=["task", "metric"], values="value", aggfunc="mean", sort=False)
    table.columns = [f"{t} {m}" for t, m in table.columns]
    table.attrs["source"] = "; ".join(sorted(df["source"].astype(str).unique()))
    table.attrs["seeds"] = ", ".join(map(str, sorted(df["seed"].unique())))  # values are means over these
    return table


def write_table(name: str, table: pd.DataFrame | None, out_dir: str | Path) -> Path | None:
    """Write ``<out_dir>/<name>.md`` from a :func:`result_table` (nothing, and None, when it is None)."""
    if table is None:
        return None
    path = Path(out_dir) / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    head = f"# {name}\n\nsource: {table.attrs['source']}\n\nvalues: mean over seeds {table.attrs['seeds']}\n\n"
    path.write_text(head + markdown_table(table))
    return path


def machine_name() -> str:
    """E.g. ``x86_64, 2 CPU cores`` or ``x86_64, 16 CPU cores, NVIDIA H100 80GB HBM3``."""
    name = f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPU cores"
    if torch.cuda.is_available():
        name += f", {torch.cuda.get_device_name(0)}"
    return name


def provenance(cfg: Any, source: str) -> dict[str, Any]:
    """The provenance columns of a result row produced by a run of this code with config ``cfg``."""

    return {"source": source, "git_sha": git_sha(), "machine": machine_name(),
            "seed": int(cfg.runtime.seed), "config_hash": config_hash(cfg)}


def append_results(rows: Sequence[Mapping[str, Any]], path: str | Path, key: Sequence[str] = ()) -> pd.DataFrame:
    """Add ``rows`` to the CSV at ``path`` (created if needed); earlier rows with the same ``key`` are replaced.

    Safe for several processes writing one table (e.g. two seed ranges of a repro run, one per core): the
    read-modify-write holds an exclusive lock on ``<path>.lock`` and the new file replaces the old atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = pd.DataFrame(list(rows))
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        old = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=new.columns)
        df = pd.concat([old, new], ignore_index=True)
        if key:
            df = df.drop_duplicates(subset=list(key), keep="last")
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        df.to_csv(tmp, index=False)
        os.replace(tmp, path)
    return df


# ---------------------------------------------------------------------------------------- rows from the engines

def probe_rows(results: Sequence[Mapping[str, Any]], model: str) -> pd.DataFrame:
    """Probe results (``probe.run_probe(...)["results"]``) as rows of the ``fig3_layerwise_probe`` table.

    Head ``linear_block<i>`` -> probe ``linear``, layer i; ``linear`` (the final output) -> layer = number of
    blocks; ``weighted`` / ``attentive`` -> no layer.
    """
    blocks = [int(r["head"][len("linear_block"):]) for r in results if r["head"].startswith("linear_block")]
    depth = max(blocks) + 1 if blocks else None
    rows = []
    for r in results:
        head = r["head"]
        layer = (int(head[len("linear_block"):]) if head.startswith("linear_block") else
                 depth if head == "linear" else None)
        rows.append({"model": model, "task": r["task"], "probe": "linear" if head.startswith("linear") else head,
                     "layer": layer, "metric": r["metric"], "value": r["value"]})
    return pd.DataFrame(rows).astype({"layer": "Int64"})


def probe_table(runs: Mapping[str, Mapping[str, Any] | None]) -> pd.DataFrame:
    """``{model label: run_probe output or None}`` -> one :func:`probe_rows` table (None entries are left out)."""
    frames = [probe_rows(res["results"], name) for name, res in runs.items() if res is not None]
    return pd.concat(frames, ignore_index=True)


def record_results(df: pd.DataFrame, path: str | Path, cfg: Any, source: str,
                   key: Sequence[str] = ()) -> pd.DataFrame:
    """Append ``df``'s rows with this run's provenance to the table at ``path`` (rows with the same ``key``
    values are replaced; provenance columns a row already has, e.g. its own ``config_hash``, are kept).
    Returns the whole table.

    Raises:
        ValueError: ``path`` is one of the :data:`RESULTS` tables and ``df`` lacks some of its columns.
    """
    missing = [c for c in RESULTS.get(Path(path).stem, ()) if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: rows lack columns {missing} of table {Path(path).stem!r}")
    prov = provenance(cfg, source)
    return append_results([{**prov, **row} for row in df.to_dict("records")], path, key)  # a row's own values win
