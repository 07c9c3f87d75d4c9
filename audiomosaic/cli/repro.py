"""``python -m audiomosaic repro``: the command line of :mod:`audiomosaic.repro.suites` (suites, ``--check``, ``--report``)."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import torch

from audiomosaic.config import FinetuneConfig, ProbeConfig, parse_kv, resolve
from audiomosaic.presets import FINETUNE_PRESETS, PROBE_PRESETS
from audiomosaic.repro import decide
from audiomosaic.repro.check import run_check, summary
from audiomosaic.repro.report import write_report
from audiomosaic.repro.suites import SUITES, TASKS, Context, check_conditions, code_version, run_suite


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m audiomosaic repro",
        description="Small-scale reproduction: pre-train each condition per seed, evaluate on held-out groups of "
                    "the corpus' tasks, append rows (with provenance) to the result tables. Resumable.",
        epilog="key=value: PretrainConfig overrides for every condition; probe.key=value / finetune.key=value go "
               "to the probe / fine-tune configs, e.g. probe.optim.epochs=30 finetune.optim.epochs=5")
    p.add_argument("--suite", nargs="+", default=["main"], choices=(*SUITES, *decide.SUITES),
                   help="suites to run, in order; decide, decide_finetune and decide_curve are the pre-registered "
                        "reproduction (their preset, tasks and evaluations are fixed: only seeds and folders apply)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--conditions", nargs="*", default=[],
                   help="only these conditions of every suite run (e.g. tf_paper random_init); the others are fixed")
    p.add_argument("--preset", default="repro_cpu", help="pre-training preset (TRAIN_PRESETS)")
    p.add_argument("--probe-preset", default="cpu", help="PROBE_PRESETS key")
    p.add_argument("--finetune-preset", default="repro_cpu", help="FINETUNE_PRESETS key")
    p.add_argument("--tasks", nargs="+", default=list(TASKS))
    p.add_argument("--finetune-tasks", nargs="+", default=["inst11"])
    p.add_argument("--out", default="paper_figures/results", help="result tables folder")
    p.add_argument("--run-root", default="runs/repro", help="pre-training / probe run folders")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave torch's default)")
    p.add_argument("--report", action="store_true", help="after the suites, write claims.csv and the README section")
    p.add_argument("--readme", default="paper_figures/README.md", help="README whose '## Claims' section --report "
                                                                        "rewrites ('' = do not touch)")
    p.add_argument("--no-run", action="store_true", help="only --report")
    p.add_argument("--check", action="store_true",
                   help="re-run the chosen suites/conditions/seeds from scratch under --check-root and compare each "
                        "number with the committed one (writes <out>/regeneration_check.csv; exit 1 if one is off)")
    p.add_argument("--check-root", default="runs/check", help="scratch folder of --check")
    p.add_argument("--check-k", type=float, default=2.0, help="--check tolerance: k x seed-to-seed s.d.")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return p


def context(args: argparse.Namespace) -> Context:
    """The Context of parsed arguments; overrides are validated here, before anything runs."""
    kv = parse_kv(args.overrides)
    split: dict[str, dict[str, Any]] = {"": {}, "probe": {}, "finetune": {}}
    for k, v in kv.items():
        head, _, rest = k.partition(".")
        split[head if head in ("probe", "finetune") and rest else ""][rest if head in ("probe", "finetune") else k] = v
    if not set(args.suite) <= set(decide.SUITES):  # the decide suites check their own arm names
        check_conditions(args.conditions)
    resolve(args.preset, split[""])
    resolve(args.probe_preset, split["probe"], presets=PROBE_PRESETS, cls=ProbeConfig)
    resolve(args.finetune_preset, split["finetune"], presets=FINETUNE_PRESETS, cls=FinetuneConfig)
    return Context(args.preset, args.probe_preset, args.finetune_preset, tuple(args.tasks), tuple(args.seeds),
                   Path(args.out), Path(args.run_root), split[""], split["probe"], split["finetune"],
                   tuple(args.finetune_tasks))


def main(argv: list[str] | None = None) -> int:
    """``python -m audiomosaic repro ...``; 2 with a one-line message on bad input, 1 when --check finds a number
    outside noise."""
    args = _parser().parse_args(argv)
    status = 0
    try:
        ctx = context(args)
        if args.threads > 0:
            torch.set_num_threads(args.threads)
        code_version()  # pin the rows' code version to the tree this process loaded
        if args.check:

            df = run_check(ctx, args.suite, args.conditions, Path(args.check_root), k=args.check_k)
            print(summary(df), flush=True)
            status = int(df.empty or not df["within_noise"].all())
        elif not args.no_run:
            for suite in (s for s in args.suite if s not in decide.SUITES):
                run_suite(suite, ctx, args.conditions)
            for seed in ctx.seeds:  # the decide suites seed-major: a stop leaves every suite's finished seeds whole
                for suite in (s for s in args.suite if s in decide.SUITES):
                    decide.run(suite, dataclasses.replace(ctx, seeds=(seed,)), tuple(args.conditions))
        if args.report or args.no_run:

            print(write_report(ctx.out, Path(args.readme) if args.readme else None))
    except ValueError as e:
        print(f"audiomosaic repro: error: {e}", file=sys.stderr)
        return 2
    return status
