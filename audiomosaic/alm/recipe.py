"""The authors' recipe on real data: one stage per call, a local LLaMA / Vicuna, LTU-format question files.

A question file is LTU's JSON: a list of ``{"audio_id": path, "instruction": str, "input": str, "output": str}``
(``input`` may be empty). Audio is read with the kit's reader and turned into LTU-normalised 1024 x 128 fbanks
(``AlmConfig.frontend``). Each call trains one stage (``--preset stage1`` ... ``stage4``) starting from the
previous stage's adapter (``init``), and writes ``<run_dir>/<stage>.safetensors`` (+ JSON sidecar) and
``metrics.jsonl``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from audiomosaic.alm.config import AlmConfig
from audiomosaic.alm.lm import AudioLM, build_audio_lm, load_adapter, save_adapter
from audiomosaic.alm.train import train_stage
from audiomosaic.data.audio import read_audio
from audiomosaic.frontend import fbank
from audiomosaic.train.runlog import MetricsLog, write_config
from audiomosaic.train.runtime import resolve_device


def read_questions(path: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """LTU JSON -> (examples with a ``clip`` index, the distinct audio paths in index order)."""
    rows = json.loads(Path(path).read_text())
    paths: dict[str, int] = {}
    examples = []
    for r in rows:
        clip = paths.setdefault(r["audio_id"], len(paths))
        examples.append({"clip": clip, "instruction": r["instruction"], "input": r.get("input", ""),
                         "output": r["output"]})
    return examples, list(paths)


def spec_reader(paths: Sequence[str], cfg: AlmConfig, root: str | Path = "") -> Any:
    """``get_specs(clip indices)`` for :func:`train_stage`: files -> (B, T, F) LTU-normalised fbanks."""

    def get(ids: Sequence[int]) -> torch.Tensor:
        return torch.stack([fbank(np.asarray(read_audio(Path(root) / paths[i])), 16000, cfg.frontend) for i in ids])

    return get


def run_stage(cfg: AlmConfig, questions: str | Path, run_dir: str | Path, init: str | Path = "",
              audio_root: str | Path = "", device: str = "auto", model: AudioLM | None = None) -> Path:
    """Train ``cfg.stage`` on a question file; returns the adapter's path.

    Args:
        init: the previous stage's adapter (stage 2 loads stage 1's, ...); "" = start from ``cfg.encoder_path``.
        audio_root: folder that relative ``audio_id`` paths are under.
        model: an already built model (tests); default: built from ``cfg`` (the LM from ``cfg.lm.path``).
    """

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.runtime.seed)
    model = model or build_audio_lm(cfg)
    if init:
        load_adapter(model, init)
    model.to(resolve_device(device))
    examples, paths = read_questions(questions)
    write_config(run_dir, cfg, {"examples": len(examples), "clips": len(paths), "init": str(init)})
    log = MetricsLog(run_dir / "metrics.jsonl")
    summary = train_stage(model, examples, spec_reader(paths, cfg, audio_root), log=log.write)
    return save_adapter(model, run_dir / cfg.stage.name, {"questions": str(questions), "summary": summary})
