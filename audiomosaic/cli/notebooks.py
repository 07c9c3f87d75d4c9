"""``python -m audiomosaic run-notebooks``: execute notebooks with a parameter file (papermill)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import yaml

from audiomosaic.lab.runner import (
    check_params,
    check_preset,
    load_params,
    notebook_parameters,
    notebook_paths,
    params_for,
    run_notebook,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m audiomosaic run-notebooks",
                                description="execute notebooks with a parameter file (papermill)")
    p.add_argument("notebooks", nargs="*", help="names (10_pretrain or 10) or paths; default: all numbered ones")
    p.add_argument("--params", default=None,
                   help="parameter file (YAML), e.g. notebooks/params/smoke.yaml; default: the notebooks' defaults")
    p.add_argument("--out", default="runs/exec", help="folder for the executed notebooks")
    p.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                   help="extra parameter for the notebooks that declare it (YAML-parsed), e.g. -p seed 1")
    p.add_argument("--timeout", type=int, default=1800, help="per-cell timeout in seconds")
    p.add_argument("--log-output", action="store_true", help="stream cell output to the terminal")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the notebooks in order; print one line per notebook and write ``<out>/summary.json``."""
    args = _parser().parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")  # the kernels inherit it: no GUI backend on servers
    os.environ.setdefault("SOURCE_DATE_EPOCH", "0")  # byte-stable PDFs
    try:
        nbs = notebook_paths(args.notebooks)
        params = load_params(args.params) if args.params else {}
        check_params(params, notebook_paths())
        extra = {k: yaml.safe_load(v) if v else "" for k, v in args.param}  # YAML reads "" as None
        declared = {nb: set(notebook_parameters(nb)) for nb in nbs}
        unused = sorted(set(extra) - set().union(*declared.values()))
        if unused:
            raise ValueError(f"-p {unused}: declared by none of {', '.join(nb.stem for nb in nbs)}")
        for nb in nbs:
            if "preset" in extra and "preset" in declared[nb]:
                check_preset(nb.stem, extra["preset"])
    except (ValueError, OSError) as e:
        print(f"audiomosaic run-notebooks: {e}", file=sys.stderr)
        return 2
    summary, failed = [], 0
    for nb in nbs:
        out = Path(args.out) / nb.name
        t0 = time.perf_counter()
        try:
            mine = {k: v for k, v in extra.items() if k in declared[nb]}
            run_notebook(nb, out, {**params_for(nb, params), **mine}, args.timeout, args.log_output)
            status = "ok"
        except Exception as e:  # noqa: BLE001 - report every notebook, then fail
            status, failed = f"FAILED: {type(e).__name__}: {str(e).strip().splitlines()[-1][:200]}", failed + 1
        seconds = round(time.perf_counter() - t0, 1)
        summary.append({"notebook": nb.stem, "status": status, "seconds": seconds, "output": str(out)})
        print(f"{nb.stem:24s} {status} ({seconds:.1f} s) -> {out}", flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=1))
    return 1 if failed else 0
