"""``python -m audiomosaic probe|finetune``: the command lines of :mod:`audiomosaic.train.probe` and
:mod:`audiomosaic.train.finetune`, which share their arguments (checkpoint, preset, run dir, resume, overrides) and their
error handling."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

from audiomosaic.config import FinetuneConfig, ProbeConfig, parse_kv, preset_from_env, resolve
from audiomosaic.presets import FINETUNE_PRESETS, PROBE_PRESETS
from audiomosaic.train.finetune import run_finetune
from audiomosaic.train.probe import format_results, run_probe
from audiomosaic.train.runlog import default_run_dir


def _parser(kind: str, description: str, epilog: str, checkpoint_help: str, resume_help: str
            ) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m audiomosaic {kind}", description=description, epilog=epilog)
    p.add_argument("--checkpoint", default=None, help=checkpoint_help)
    p.add_argument("--preset", default="cpu", help="settings preset (default: cpu; $AUDIOMOSAIC_PRESET replaces it)")
    p.add_argument("--run-dir", default=None, help=f"output folder (default: runs/{kind}-<preset>-<time>)")
    p.add_argument("--resume", action="store_true", help=resume_help)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. optim.epochs=5")
    return p


def _run(kind: str, args: argparse.Namespace, presets: dict, cls: type,
         run: Callable[[Any, Path], dict[str, Any]]) -> tuple[Any, Path, dict[str, Any]] | None:
    """Resolve the config, check the arguments, run; None (after a one-line message) on bad input."""
    try:
        preset = preset_from_env(args.preset)  # $AUDIOMOSAIC_PRESET replaces --preset
        cfg = resolve(preset, parse_kv(args.overrides), presets=presets, cls=cls)
        if args.checkpoint is None and not args.resume:
            raise ValueError("--checkpoint is required (or --resume with an existing --run-dir)")
        if args.resume and args.run_dir is None:
            raise ValueError("--resume needs --run-dir")
        run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(kind, preset)
        return cfg, run_dir, run(cfg, run_dir)
    except ValueError as e:
        print(f"audiomosaic {kind}: {e}", file=sys.stderr)
        return None


def probe_main(argv: list[str] | None = None) -> int:
    p = _parser("probe", "Probe a frozen encoder: features are pooled once, then linear / layer-wise / weighted / "
                         "attentive heads train on them. Reports the last epoch (best-on-test only with "
                         "report_best=True).",
                f"presets: {', '.join(PROBE_PRESETS)}. Examples: heads=\"('linear','attentive')\" all_layers=True "
                "data.task=inst11 optim.epochs=30",
                "safetensors export, resume checkpoint or authors' .pt; 'random' = random cfg.encoder",
                "reuse the run dir's cached features and restart head training from scratch (heads are cheap and "
                "are not checkpointed)")
    p.add_argument("--random-init", action="store_true", help="the checkpoint's architecture with random weights")
    args = p.parse_args(argv)
    if args.checkpoint is None:  # the features come from the encoder, even when resuming
        p.error("--checkpoint is required")
    done = _run("probe", args, PROBE_PRESETS, ProbeConfig, lambda cfg, run_dir: run_probe(
        cfg, args.checkpoint, run_dir, resume=args.resume, random_init=args.random_init))
    if done is None:
        return 2
    _, run_dir, out = done
    print(format_results(out["results"]))
    print(f"run dir: {run_dir}")
    return 0


def finetune_main(argv: list[str] | None = None) -> int:
    p = _parser("finetune", "Fine-tune an encoder end to end (docs/method.md §8): layer-wise lr decay, mixup, SpecAugment, "
                            "token masking, class-balanced sampling, ESC-50 folds. Reports the last epoch "
                            "(best-on-test only with report_best=True).",
                f"presets: {', '.join(FINETUNE_PRESETS)}. Examples: data.task=inst11 optim.epochs=10 mixup=0.0",
                "pre-trained weights (safetensors export, resume checkpoint, authors' .pt); 'random' = from "
                "scratch; optional with --resume",
                "continue from the newest checkpoint in --run-dir")
    args = p.parse_args(argv)
    done = _run("finetune", args, FINETUNE_PRESETS, FinetuneConfig,
                lambda cfg, run_dir: run_finetune(cfg, args.checkpoint, run_dir, resume=args.resume))
    if done is None:
        return 2
    cfg, run_dir, out = done
    rows = list(out["folds"].values()) if "folds" in out else [out]
    print(format_results([{**r, "head": "finetune"} for r in rows]))
    if "sets" in out:  # dev + test sets (dev_manifest / test_sets): last and best-on-dev epoch
        from audiomosaic.train.spoof import summary

        print(summary(out["sets"]))
    if "folds" in out:
        print(f"mean over folds {list(cfg.folds)}: {out['metric']} {out['value']:.4f}")
    print(f"run dir: {run_dir}")
    return 0
