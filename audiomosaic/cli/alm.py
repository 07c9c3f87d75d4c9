"""``python -m audiomosaic alm``: the audio-language adapter (docs/method.md §12).

- ``alm train``: one stage of the authors' recipe on an LTU-format question file, with a local LLaMA/Vicuna;
- ``alm demo``: the offline demonstration on the kit's corpus (result tables in paper_figures/results/);
- ``alm ask``: answer a question about audio files with a trained adapter.
"""
from __future__ import annotations

import argparse
import sys

import torch

from audiomosaic.config import parse_kv


def _train(args: argparse.Namespace) -> int:
    from audiomosaic.alm.config import resolve_alm
    from audiomosaic.alm.recipe import run_stage

    cfg = resolve_alm(args.preset, parse_kv(args.overrides))
    path = run_stage(cfg, args.questions, args.run_dir or f"runs/alm-{cfg.stage.name}", args.init, args.audio_root,
                     args.device)
    print(f"adapter: {path}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from audiomosaic.alm.demo import resolve_demo, run_demo

    if args.threads:
        torch.set_num_threads(args.threads)
    demo = resolve_demo(args.preset, parse_kv(args.overrides))
    res = run_demo(demo, args.run_dir, args.out or None)
    print(res["summary"].to_string(index=False))
    return 0


def _ask(args: argparse.Namespace) -> int:
    from audiomosaic.alm.lm import load_audio_lm
    from audiomosaic.data.audio import read_audio
    from audiomosaic.frontend import fbank

    model = load_audio_lm(args.checkpoint).eval()
    spec = torch.stack([fbank(read_audio(f), 16000, model.cfg.frontend) for f in args.files])
    for f, answer in zip(args.files, model.generate(spec, [args.question] * len(args.files), args.max_new_tokens)):
        print(f"{f}\t{answer}")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m audiomosaic alm", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="one stage of the authors' recipe (AlmConfig presets stage1..stage4)",
                       epilog="key=value: AlmConfig overrides, e.g. lm.path=/models/vicuna-7b "
                              "encoder_path=runs/paper/encoder.safetensors stage.micro_batch=16")
    t.add_argument("--preset", default="stage1", help="stage1, stage2, stage3 or stage4")
    t.add_argument("--questions", required=True, help="LTU JSON: [{audio_id, instruction, input, output}, ...]")
    t.add_argument("--init", default="", help="the previous stage's adapter (.safetensors)")
    t.add_argument("--audio-root", default="", help="folder of relative audio_id paths")
    t.add_argument("--run-dir", default="", help="output folder (default: runs/alm-<stage>)")
    t.add_argument("--device", default="auto")
    t.add_argument("overrides", nargs="*", metavar="key=value")
    t.set_defaults(func=_train)
    d = sub.add_parser("demo", help="the offline demonstration (pretrained vs random-init encoder vs no audio)",
                       epilog="key=value: DemoConfig overrides, e.g. seeds=(0,) train_per_task=100")
    d.add_argument("--preset", default="cpu", help="cpu (the committed run) or smoke")
    d.add_argument("--run-dir", default="runs/alm-demo")
    d.add_argument("--out", default="paper_figures/results", help="result tables folder ('' = do not write)")
    d.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    d.add_argument("overrides", nargs="*", metavar="key=value")
    d.set_defaults(func=_demo)
    a = sub.add_parser("ask", help="answer a question about audio files with a trained adapter")
    a.add_argument("--checkpoint", required=True, help="an adapter .safetensors (its sidecar names the LM)")
    a.add_argument("--question", default="Write an audio caption describing the sound.")
    a.add_argument("--max-new-tokens", type=int, default=40)
    a.add_argument("files", nargs="+")
    a.set_defaults(func=_ask)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except ValueError as e:  # bad keys, presets, paths: one line
        print(f"audiomosaic alm: {e}", file=sys.stderr)
        return 2
