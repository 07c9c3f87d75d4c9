"""``python -m audiomosaic figures``: redraw ``paper_figures/`` from the committed tables."""
from __future__ import annotations

import argparse

from audiomosaic.lab.figures import FORMATS, render_all


def main(argv: list[str] | None = None) -> int:
    """``python -m audiomosaic figures``: redraw paper_figures/ from paper_figures/results/."""
    p = argparse.ArgumentParser(prog="python -m audiomosaic figures", description=main.__doc__)
    p.add_argument("--results", default="paper_figures/results", help="committed result tables (CSV)")
    p.add_argument("--out", default="paper_figures", help="where the figures and tables are written")
    p.add_argument("--formats", nargs="+", default=["png", "pdf"], choices=FORMATS)
    args = p.parse_args(argv)
    written = render_all(args.results, args.out, args.formats)
    for name, paths in written.items():
        print(f"{name}: {', '.join(str(p) for p in paths)}")
    return 0
