"""The ``data`` subcommand: ``build`` a corpus, ``check`` a manifest.

    python -m audiomosaic data build --recipe tiny --out data/built/tiny [--seed 0] [--no-progress] [--force]
    python -m audiomosaic data build --recipe spoof [--source default]   # bona fide from data/built/<source>
    python -m audiomosaic data check path/to/train.json [--workers 4]

``main(argv)`` returns the exit status: 0 success, 1 ``check`` found unusable files, 2 bad input (one line).
"""
from __future__ import annotations

import argparse
import json
import sys

from audiomosaic.data.check import check_manifest
from audiomosaic.data.corpus import build, is_built
from audiomosaic.paths import data_dir


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="audiomosaic data", description="Build offline corpora, check manifests.")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (or reuse) a corpus: tiny, default, large or spoof")
    b.add_argument("--recipe", default="default", choices=("tiny", "default", "large", "spoof"))
    b.add_argument("--source", default="default", choices=("default", "tiny"),
                   help="spoof only: the corpus whose clips are bona fide (built first if missing)")
    b.add_argument("--source-dir", default=None, help="spoof only: that corpus' folder (default data/built/<source>)")
    b.add_argument("--out", default=None, help="output folder (default: $AUDIOMOSAIC_DATA or data/built/<recipe>)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--workers", type=int, default=None, help="render processes (default: all CPUs)")
    b.add_argument("--no-progress", action="store_true")
    b.add_argument("--force", action="store_true", help="rebuild even if a complete build exists")
    c = sub.add_parser("check", help="read every file of a manifest and report unusable/suspicious ones")
    c.add_argument("manifest", help="authors' JSON, a CSV of (path, labels), or a dataset folder")
    c.add_argument("--workers", type=int, default=4)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)

    try:
        if args.cmd == "build":
            out = args.out or str(data_dir(args.recipe))
            reused = "reused" if not args.force and is_built(out, args.recipe, args.seed, args.source) else "built"
            path = build(args.recipe, out, seed=args.seed, progress=not args.no_progress, workers=args.workers,
                         force=args.force, source=args.source, source_dir=args.source_dir)
            info = json.loads((path / "build_info.json").read_text())
            if args.recipe == "spoof":
                sets = "; ".join(f"{t}: " + ", ".join(f"{s} {c['bonafide']}+{c['spoof']}" for s, c in v.items())
                                 for t, v in info["counts"].items())
                print(f"{reused} spoof corpus (from {args.source}) at {path}: {info['files']} files ({sets} "
                      f"bona fide+spoof), {info['bytes'] / 1e6:.0f} MB, {info['seconds']:.1f} s; leakage "
                      f"{info['leakage']}; trivial-cue EER {info['trivial_cue']}")
                return 0
            tasks = ", ".join(f"{k} {v['train']}/{v['test']}" for k, v in info["tasks"].items())
            print(f"{reused} {args.recipe} corpus at {path}: {info['clips']} clips ({tasks} train/test), "
                  f"{info['bytes'] / 1e6:.0f} MB, {info['seconds']:.1f} s")
            return 0
        report = check_manifest(args.manifest, workers=args.workers)
        print(report.format())
        return report.exit_code
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
