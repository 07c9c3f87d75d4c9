"""``python -m audiomosaic verify-reference FIXTURE``: compare this code with a golden fixture of the authors' code.

Two fixture kinds (tests/fixtures/README.md): the ViT fixture (``reference_vit_tiny.pt``) and the AASIST back-end
fixture (``reference_aasist.pt``, recognised by its ``format`` key).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from audiomosaic.aasist import FIXTURE_FORMAT, verify_aasist
from audiomosaic.reference import FRONTEND_TOL, MODEL_TOL, load_fixture, verify


def verify_file(path: str | Path) -> dict[str, float]:
    """Relative errors of every output the fixture at ``path`` holds, whichever kind it is."""
    try:
        fx = torch.load(path, map_location="cpu", weights_only=True) if Path(path).is_file() else None
    except Exception:  # noqa: BLE001 - not a torch file: load_fixture below says so in one line
        fx = None
    if isinstance(fx, dict) and fx.get("format") == FIXTURE_FORMAT:
        return verify_aasist(path)
    return verify(load_fixture(path))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="audiomosaic verify-reference",
                                 description="Check this implementation against a fixture of the authors' code.")
    ap.add_argument("fixture", help="a .pt fixture (format: tests/fixtures/README.md)")
    args = ap.parse_args(argv)
    try:
        errs = verify_file(args.fixture)
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
