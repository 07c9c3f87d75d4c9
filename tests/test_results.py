"""Result tables: schemas, provenance, appending rows, pivoting and markdown."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from audiomosaic.repro import results
from audiomosaic.config import PretrainConfig, config_hash


PROV = {"source": "test", "git_sha": "x", "machine": "m", "seed": 0, "config_hash": "h"}


def test_probe_rows_map_heads_to_layers() -> None:
    rows = [{"task": "t", "head": h, "metric": "accuracy", "value": v}
               for h, v in (("linear_block0", 0.1), ("linear_block1", 0.2), ("linear", 0.3), ("attentive", 0.4))]
    df = results.probe_rows(rows, "m")
    assert list(df["probe"]) == ["linear", "linear", "linear", "attentive"]
    assert df["layer"].tolist()[:3] == [0, 1, 2] and pd.isna(df["layer"].iloc[3])
    both = results.probe_table({"m": {"results": rows}, "random init": None})
    assert len(both) == 4 and set(both["model"]) == {"m"}


def test_results_are_appended_with_provenance_and_replaced_by_key(tmp_path: Path) -> None:
    path = tmp_path / "table_finetune.csv"
    cfg = PretrainConfig()
    results.record_results(pd.DataFrame([{"model": "m", "task": "a", "metric": "acc", "value": 0.1}]), path, cfg,
                            "unit test", key=("model", "task"))
    df = results.record_results(pd.DataFrame([{"model": "m", "task": "a", "metric": "acc", "value": 0.2},
                                               {"model": "m", "task": "b", "metric": "acc", "value": 0.3}]),
                                 path, cfg, "unit test", key=("model", "task"))
    assert df["value"].tolist() == [0.2, 0.3]
    saved = results.load_result(tmp_path, "table_finetune")
    assert saved.loc[0, "config_hash"] == config_hash(cfg) and saved.loc[0, "seed"] == cfg.runtime.seed
    assert saved.loc[0, "source"] == "unit test" and "CPU cores" in saved.loc[0, "machine"]
    with pytest.raises(ValueError, match="metric"):
        results.record_results(pd.DataFrame([{"model": "m", "task": "a", "value": 1.0}]), path, cfg, "t")


def test_result_tables_pivot_and_render_as_markdown(tmp_path: Path) -> None:
    pd.DataFrame([{"model": "m", "task": t, "metric": "acc", "value": v, **PROV} for t, v in (("a", 0.5), ("b", 0.25))]
                 ).to_csv(tmp_path / "table_finetune.csv", index=False)
    table = results.result_table("table_finetune", tmp_path)
    assert list(table.columns) == ["a acc", "b acc"] and table.loc["m", "b acc"] == 0.25
    path = results.write_table("table_finetune", table, tmp_path / "out")
    assert path.read_text().splitlines()[-3:] == ["| model | a acc | b acc |", "|---|---|---|", "| m | 0.5 | 0.25 |"]
    assert results.write_table("table_probe", results.result_table("table_probe", tmp_path), tmp_path) is None


def _append_many(path: str, start: int) -> None:
    for i in range(start, start + 40):
        results.append_results([{"k": i, "v": i * 2}], path, key=("k",))


def test_two_processes_appending_to_one_table_lose_no_row(tmp_path: Path) -> None:
    """Two repro processes (one per core) write the same table: the lock keeps every row of both."""
    import multiprocessing as mp

    path = tmp_path / "t.csv"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(path), s)) for s in (0, 1000)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    df = pd.read_csv(path)
    assert sorted(df["k"]) == [*range(40), *range(1000, 1040)] and (df["v"] == 2 * df["k"]).all()
    assert not list(tmp_path.glob(".t.csv.tmp*"))  # no temporary file left behind
