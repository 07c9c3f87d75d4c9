"""``python -m audiomosaic verify-reference FIXTURE``: compare this code with a golden fixture of the authors' code."""
from __future__ import annotations

import argparse

from audiomosaic.reference import FRONTEND_TOL, MODEL_TOL, load_fixture, verify


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="audiomosaic verify-reference",
                                 description="Check this implementation against a fixture of the authors' code.")
    ap.add_argument("fixture", help="a .pt fixture (format: tests/fixtures/README.md)")
    args = ap.parse_args(argv)
    try:
        errs = verify(load_fixture(args.fixture))
    except (ValueError, KeyError, RuntimeError) as e:
        print(f"verify-reference: error: {e}".splitlines()[0])
        return 2
    bad = []
    for key, err in errs.items():
        tol = FRONTEND_TOL if key == "fbank_normalised" else MODEL_TOL
        ok = err <= tol
        bad += [] if ok else [key]
        print(f"{key:18s} max rel err {err:.3e}  (tol {tol:.0e})  {'ok' if ok else 'MISMATCH'}")
    if bad:
        print(f"verify-reference: mismatch in {', '.join(bad)}")
        return 1
    print("verify-reference: all outputs within tolerance")
    return 0
