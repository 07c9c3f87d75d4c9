"""``python -m audiomosaic pretrain``: the command line of :mod:`audiomosaic.train.pretrain`, and the main job (no
``--preset``: build or reuse the default corpus, pre-train the cpu preset, linear-probe every task)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch.distributed as dist

from audiomosaic.config import PretrainConfig, apply_overrides, from_dict, parse_kv, preset_from_env, resolve
from audiomosaic.presets import PROBE_PRESETS, TRAIN_PRESETS
from audiomosaic.train.dist import cleanup, init_distributed, print0
from audiomosaic.train.main_job import main_job
from audiomosaic.train.pretrain import pretrain, restarted
from audiomosaic.train.probe import corpus_root
from audiomosaic.train.runlog import default_run_dir, read_config
from audiomosaic.train.runtime import backend_settings, resolve_device


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m audiomosaic pretrain",
        description="Contrastive pre-training (AudioMosaic, docs/method.md §7). With no --preset: the main job, i.e. build or "
                    "reuse the default corpus, pre-train the cpu preset, then linear-probe every task and print a "
                    "table (<= 15 min on 2 CPU cores). Multi-GPU: torchrun --nproc_per_node N -m audiomosaic "
                    "pretrain --run-dir DIR ... (a restarted worker resumes by itself).",
        epilog=f"presets: {', '.join(f'{k} ({PRESET_HELP[k]})' if k in PRESET_HELP else k for k in TRAIN_PRESETS)}"
               ". Overrides are dotted keys "
               "of audiomosaic.config.PretrainConfig, e.g. optim.epochs=10 data.batch_size=64 mask.layout=reference "
               "encoder.depth=6; a wrong key or type is an error naming it. objective=mae trains the masked-"
               "reconstruction baseline instead (AudioMAE-style, sizes under mae.*; its decoder is dropped from "
               "the exported encoder). $AUDIOMOSAIC_PRESET replaces --preset.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default=None, help="settings preset (default: cpu, the main job)")
    p.add_argument("--run-dir", default=None, help="output folder (default: runs/pretrain-<preset>-<timestamp>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --run-dir from its newest readable checkpoint, with its config.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (same as runtime.progress=False)")
    p.add_argument("--probe", action=argparse.BooleanOptionalAction, default=None,
                   help="linear-probe the result afterwards (default: only for the main job)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    return p


PRESET_HELP = {"smoke": "seconds, tests", "cpu": "main job, 2 CPU cores", "gpu": "ViT-B on one GPU machine",
               "paper": "the authors' recipe"}


def _config(args: argparse.Namespace, resume: bool) -> tuple[PretrainConfig, str]:
    """The run's config: the run dir's config.json when resuming, else preset + overrides."""
    overrides: dict[str, Any] = parse_kv(args.overrides)
    if args.no_progress:
        overrides["runtime.progress"] = False
    preset = preset_from_env(args.preset or "cpu")
    if resume and args.run_dir and (Path(args.run_dir) / "config.json").exists():
        return apply_overrides(from_dict(PretrainConfig, read_config(args.run_dir)), overrides), preset
    return resolve(preset, overrides), preset


def main(argv: list[str] | None = None) -> int:
    """``python -m audiomosaic pretrain ...``; returns the exit code (2 with a one-line message on bad input)."""
    args = _parser().parse_intermixed_args(argv)  # key=value pairs may come before and after the flags
    resume = args.resume or restarted()
    try:
        if args.resume and not args.run_dir:
            raise ValueError("--resume needs --run-dir")
        cfg, preset = _config(args, resume)
        info = init_distributed(cfg.runtime.device)
        run_dir = [args.run_dir or str(default_run_dir("pretrain", preset))]
        if info.enabled:
            dist.broadcast_object_list(run_dir, src=0)  # one folder, even if the ranks' clocks straddle a second
        summary = pretrain(cfg, run_dir[0], resume)
        if (args.probe if args.probe is not None else args.preset is None) and info.is_main:
            with backend_settings(resolve_device(cfg.runtime.device), cfg.runtime.deterministic):  # as pretraining
                main_job(summary["weights"], summary["init_weights"], corpus_root(cfg.data), run_dir[0],
                         preset if preset in PROBE_PRESETS else "cpu", cfg.runtime.progress)
        print0(f"run: {run_dir[0]}")
    except ValueError as e:
        print(f"audiomosaic pretrain: error: {e}", file=sys.stderr)
        return 2
    finally:
        cleanup()
    return 0
