"""The main job's last step: linear probes of a freshly pre-trained encoder and of its random init on every task."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from audiomosaic.train.probe import linear_probe_tasks


def main_job(weights: str | Path, init_weights: str | Path | None, corpus: str | Path, run_dir: str | Path,
             preset: str = "cpu", progress: bool = True) -> list[dict[str, Any]]:
    """The main job's last step: linear probes (a ``PROBE_PRESETS`` name, default ``cpu``) of the pre-trained
    encoder and of its random init (the baseline) on every labelled task of the corpus; prints and returns rows."""
    tasks = sorted(json.loads((Path(corpus) / "build_info.json").read_text())["tasks"])
    kw = dict(preset=preset, overrides={"runtime.progress": progress})
    rows = linear_probe_tasks(weights, corpus, tasks, run_root=Path(run_dir) / "probe", **kw)
    base = {}
    if init_weights is not None:
        for r in linear_probe_tasks(init_weights, corpus, tasks, run_root=Path(run_dir) / "probe_init", **kw):
            base[(r["task"], r["head"])] = r["value"]
    print(f"\n{'task':10s} {'metric':9s} {'pre-trained':>11s} {'random init':>11s}")
    for r in rows:
        b = base.get((r["task"], r["head"]))
        print(f"{r['task']:10s} {r['metric']:9s} {r['value']:11.4f} {'-' if b is None else f'{b:.4f}':>11s}")
    return [{**r, "random_init": base.get((r["task"], r["head"]))} for r in rows]
