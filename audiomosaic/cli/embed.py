"""``python -m audiomosaic embed``: embed audio files with a checkpoint into one ``.npy`` (+ a ``.json`` of names)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from audiomosaic.data.audio import read_audio
from audiomosaic.embed import load


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m audiomosaic embed",
                                description="Embed audio files (any length, rate, channel count) with a checkpoint.")
    p.add_argument("files", nargs="+", help="audio files readable by libsndfile (wav, flac, ogg, aiff)")
    p.add_argument("--checkpoint", required=True, help="safetensors export, resume checkpoint or authors' .pt")
    p.add_argument("--out", required=True, help="output .npy: (n_files, D) float32; names go to the .json beside it")
    p.add_argument("--layer", type=int, default=None, help="token mean of this block (default: the representation)")
    p.add_argument("--hop", type=float, default=None, help="hop between windows in seconds (default: one window)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--batch-size", type=int, default=16, help="windows per forward pass")
    return p


def _read(path: str, sample_rate: int) -> np.ndarray:
    try:
        return read_audio(path, sample_rate)
    except (RuntimeError, ValueError, OSError) as e:  # libsndfile errors are RuntimeErrors
        raise ValueError(f"cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        embedder = load(args.checkpoint, device=args.device, hop_seconds=args.hop, batch_size=args.batch_size)
        rows = []
        for f in args.files:
            wav = _read(f, embedder.sample_rate)
            try:
                rows.append(embedder.embed(wav, embedder.sample_rate, layer=args.layer)["embedding"].numpy())
            except ValueError as e:
                raise ValueError(f"{f}: {e}") from None
    except ValueError as e:
        print(f"audiomosaic embed: {e}", file=sys.stderr)
        return 2
    out = Path(args.out).with_suffix(".npy")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, np.stack(rows).astype(np.float32))
    meta = {"files": list(args.files), "checkpoint": str(args.checkpoint), "layer": args.layer, "hop": args.hop,
            "dim": int(rows[0].shape[0]), "window_seconds": embedder.window_seconds}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    print(f"wrote {out} ({len(rows)} x {rows[0].shape[0]})")
    return 0
