"""``python -m audiomosaic <command> ...``: one entry point; each command lives in its own module."""
from __future__ import annotations

import importlib
import sys

# command -> ("module" or "module:function", one-line help); the function (default ``main``) takes argv, returns
# the exit code.
COMMANDS: dict[str, tuple[str, str]] = {
    "pretrain": ("audiomosaic.cli.pretrain",
                 "pre-training, contrastive or masked reconstruction (no arguments: the main job on the default data)"),
    "probe": ("audiomosaic.cli.evaluate:probe_main",
              "linear / layer-wise / weighted-sum / attentive probes of a frozen encoder"),
    "finetune": ("audiomosaic.cli.evaluate:finetune_main", "fine-tune an encoder on a labelled task"),
    "embed": ("audiomosaic.cli.embed", "embed audio files with a checkpoint"),
    "data": ("audiomosaic.cli.data", "build offline corpora (data build) and check manifests (data check)"),
    "verify-reference": ("audiomosaic.cli.reference", "check this code against a fixture of the authors' code"),
    "run-notebooks": ("audiomosaic.cli.notebooks", "execute the notebooks with a parameter file (papermill)"),
    "figures": ("audiomosaic.cli.figures",
                "redraw paper_figures/ from the committed tables in paper_figures/results/"),
    "spoof": ("audiomosaic.cli.spoof",
              "spoof detection (EnvSDD style): fine-tunes per track/head/init, EER/AUC on dev + test01-04"),
    "repro": ("audiomosaic.cli.repro", "small-scale reproduction suites over seeds -> result tables and claims"),
    "alm": ("audiomosaic.cli.alm", "audio-language adapter: a stage of the LTU recipe, the offline demo, ask"),
}


def usage() -> str:
    lines = ["usage: python -m audiomosaic <command> [--help] ...", "", "commands:"]
    lines += [f"  {name:18s} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["pretrain"]  # the main job
    if argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"audiomosaic: unknown command {argv[0]!r}\n{usage()}", file=sys.stderr)
        return 2
    module, _, function = COMMANDS[argv[0]][0].partition(":")
    return int(getattr(importlib.import_module(module), function or "main")(argv[1:]) or 0)
