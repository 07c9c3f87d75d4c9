"""``python -m audiomosaic spoof``: spoof-detection fine-tunes (EnvSDD style) over tracks x heads x init x seeds,
each evaluated on dev + test01-04 with the last and the best-on-dev epoch, rows appended to ``table_spoof.csv``.

A finished run (its results.json holds ``sets``) is read back, an interrupted one resumed, so the command can be
re-run after a stop. ``random_init`` uses the checkpoint's architecture with random weights.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from audiomosaic.config import FinetuneConfig, parse_kv, resolve
from audiomosaic.presets import FINETUNE_PRESETS
from audiomosaic.repro.results import record_results
from audiomosaic.repro.suites import code_version, machine
from audiomosaic.train.checkpoint import list_resume
from audiomosaic.train.finetune import run_finetune
from audiomosaic.train.runlog import write_json_atomic
from audiomosaic.train.spoof import spoof_rows, summary

MODELS = ("pretrained", "random_init")
TABLE_KEY = ("track", "head", "model", "test_set", "generator", "metric", "epoch_choice", "seed")
ARCH_SKIP = ("spec_size", "drop_path_rate")  # set by the fine-tune, not by the encoder's architecture


def arch_overrides(checkpoint: str | Path) -> dict[str, Any]:
    """The ``encoder.*`` overrides that give ``random_init`` the checkpoint's architecture (from its sidecar)."""
    side = Path(checkpoint).with_suffix(".json")
    if not side.is_file():
        raise ValueError(f"{side} not found: random_init takes the architecture from the checkpoint's JSON sidecar")
    enc = json.loads(side.read_text())["encoder"]
    return {f"encoder.{k}": tuple(v) if isinstance(v, list) else v for k, v in enc.items() if k not in ARCH_SKIP}


def earlier_provenance(table: str | Path, track: str, head: str, model: str, seed: int) -> dict[str, Any]:
    """git_sha / machine / wall_s of a run's rows already in ``table`` (a run recorded before results.json kept
    them); empty when there are none."""
    if not Path(table).is_file():
        return {}
    df = pd.read_csv(table)
    hit = df[(df["track"] == track) & (df["head"] == head) & (df["model"] == model) & (df["seed"] == seed)]
    cols = [c for c in ("git_sha", "machine", "wall_s") if c in hit]
    return {} if hit.empty else {c: hit.iloc[0][c] for c in cols}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m audiomosaic spoof", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="pre-trained encoder (safetensors export with its .json)")
    p.add_argument("--preset", default="spoof_cpu", help="fine-tune preset (default spoof_cpu; envsdd for EnvSDD)")
    p.add_argument("--tracks", nargs="+", default=["ata"], help="data.task values (corpus tracks): ata tta")
    p.add_argument("--heads", nargs="+", default=["linear", "aasist"], choices=["linear", "aasist"])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--runs", default="runs/spoof", help="parent folder of the run dirs")
    p.add_argument("--table", default="paper_figures/results/table_spoof.csv", help="table to append rows to")
    p.add_argument("--generators", action="store_true", help="also write the per-generator rows")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted config overrides; {track} in a value is replaced by the track")
    args = p.parse_args(argv)
    try:
        extra = parse_kv(args.overrides)
        arch = arch_overrides(args.checkpoint) if "random_init" in args.models else {}
        for track in args.tracks:
            for head in args.heads:
                for model in args.models:
                    for seed in args.seeds:
                        per_track = {k: v.replace("{track}", track) if isinstance(v, str) else v
                                     for k, v in extra.items()}  # data.manifest=<EnvSDD>/{track}/train.json
                        over = {**(arch if model == "random_init" else {}), **per_track, "data.task": track,
                                "head": head, "runtime.seed": seed}
                        cfg = resolve(args.preset, over, presets=FINETUNE_PRESETS, cls=FinetuneConfig)
                        run_dir = Path(args.runs) / f"{track}-{head}-{model}-s{seed}"
                        res = run_dir / "results.json"
                        t0 = time.time()
                        if res.is_file() and "sets" in json.loads(res.read_text()):
                            out = json.loads(res.read_text())  # a finished run: its own provenance is kept
                            out.setdefault("provenance", earlier_provenance(args.table, track, head, model, seed))
                        else:
                            out = run_finetune(cfg, args.checkpoint if model == "pretrained" else "random", run_dir,
                                               resume=bool(list_resume(run_dir)))
                            out["provenance"] = {"git_sha": code_version(), "machine": machine(),
                                                 "wall_s": round(time.time() - t0, 1)}
                            write_json_atomic(res, out)
                        rows = spoof_rows(out, track, model, args.generators)
                        source = (f"python -m audiomosaic spoof --preset {args.preset} --checkpoint {args.checkpoint}"
                                  " (this code's own runs)")
                        record_results(pd.DataFrame([{**r, **out["provenance"]} for r in rows]), args.table,
                                       cfg, source, key=TABLE_KEY)
                        print(f"== {track} {head} {model} seed {seed} ({out['provenance'].get('wall_s')} s): "
                              f"{run_dir}")
                        print(summary(out["sets"]))
    except ValueError as e:
        print(f"audiomosaic spoof: {e}", file=sys.stderr)
        return 2
    return 0
