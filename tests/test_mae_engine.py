"""objective=mae through the pre-training engine: trains, exports an encoder without the decoder that probes and
fine-tuning read, and resumes exactly (the same metrics.jsonl as an uninterrupted run, bitwise on CPU)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from audiomosaic.config import FinetuneConfig, ProbeConfig, resolve
from audiomosaic.model import AudioMosaic
from audiomosaic.presets import FINETUNE_PRESETS, PROBE_PRESETS
from audiomosaic.train.checkpoint import list_resume, load_any
from audiomosaic.train.finetune import run_finetune
from audiomosaic.train.pretrain import pretrain
from audiomosaic.train.probe import run_probe
from audiomosaic.train.runlog import WALL_CLOCK_KEYS, read_metrics

OVERRIDES = {"objective": "mae", "data.batch_size": 16, "optim.epochs": 1, "max_steps": 6, "runtime.log_every": 2,
             "runtime.ckpt_every": 3, "runtime.keep_ckpts": 3, "runtime.progress": False}


def _cfg(corpus: Path, **more):
    return resolve("smoke", {**OVERRIDES, "data.root": str(corpus), **more})


def _records(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK_KEYS} for r in read_metrics(run / "metrics.jsonl")]


@pytest.fixture(scope="module")
def mae_run(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("mae")
    summary = pretrain(_cfg(tiny_corpus), run)
    assert summary["step"] == 6 and "baseline" in summary and "top1" not in summary
    return run


def test_mae_run_logs_reconstruction_and_exports_the_encoder_only(mae_run: Path) -> None:
    records = _records(mae_run)
    assert [r["step"] for r in records] == [2, 4, 6]
    assert all({"loss", "baseline"} <= set(r) and "top1" not in r for r in records)
    derived = json.loads((mae_run / "config.json").read_text())["derived"]
    assert derived["objective"] == "mae" and len(derived["tokens_per_view"]) == 1
    weights = load_file(mae_run / "encoder.safetensors")
    assert not any(k.startswith("decoder") or "mask_token" in k for k in weights)
    model = load_any(mae_run / "encoder.safetensors")
    assert isinstance(model, AudioMosaic) and model.projector is None
    # the resume checkpoint holds the decoder as well: it is what a resumed run must continue
    state = torch.load(list_resume(mae_run)[-1], weights_only=True)
    assert any(k.startswith("decoder.") for k in state["model"])


def test_mae_resume_is_exact(mae_run: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    # Resume the 6-step run from a copy of its own step-3 checkpoint (its schedule is part of the config).
    ref_ckpts = list_resume(mae_run)
    step3 = next(p for p in ref_ckpts if p.name.startswith("step-") and int(p.stem.split("-")[1]) == 3)
    resumed = tmp_path / "from3"
    (resumed / "checkpoints").mkdir(parents=True)
    (resumed / "checkpoints" / step3.name).write_bytes(step3.read_bytes())
    pretrain(_cfg(tiny_corpus), resumed, resume=True)
    assert _records(resumed) == [r for r in _records(mae_run) if r["step"] > 3]
    assert load_file(resumed / "encoder.safetensors").keys() == load_file(mae_run / "encoder.safetensors").keys()
    for k, v in load_file(resumed / "encoder.safetensors").items():
        assert v.equal(load_file(mae_run / "encoder.safetensors")[k]), k


def test_probe_and_finetune_read_a_mae_encoder(mae_run: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    common = {"data.root": str(tiny_corpus), "runtime.progress": False}
    probe = run_probe(resolve("smoke", {**common, "optim.epochs": 1}, presets=PROBE_PRESETS, cls=ProbeConfig),
                      mae_run / "encoder.safetensors", tmp_path / "probe")
    ft = run_finetune(resolve("smoke", {**common, "max_steps": 2}, presets=FINETUNE_PRESETS, cls=FinetuneConfig),
                      mae_run / "encoder.safetensors", tmp_path / "ft")
    assert probe and ft
    assert (tmp_path / "probe" / "results.json").exists() and (tmp_path / "ft" / "results.json").exists()


def test_mae_arm_starts_from_the_contrastive_arms_initial_weights(mae_run: Path, tiny_corpus: Path,
                                                                  tmp_path: Path) -> None:
    pretrain(_cfg(tiny_corpus, objective="contrastive", max_steps=1), tmp_path / "tf")
    mae_init = load_file(mae_run / "init.safetensors")
    tf_init = load_file(tmp_path / "tf" / "init.safetensors")
    assert set(mae_init) < set(tf_init)  # the projector is the contrastive arm's only extra
    for k, v in mae_init.items():
        assert v.equal(tf_init[k]), k


def test_resuming_a_finished_run_reports_its_last_logged_losses(mae_run: Path, tiny_corpus: Path) -> None:
    summary = pretrain(_cfg(tiny_corpus), mae_run, resume=True)  # nothing left to train
    last = _records(mae_run)[-1]
    assert summary["step"] == 6 and summary["loss"] == last["loss"] and summary["baseline"] == last["baseline"]
