"""The pre-training engine: a tiny model overfits a fixed batch; the smoke preset runs end to end from the CLI."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from audiomosaic.train.checkpoint import list_resume, load_weights
from audiomosaic.config import resolve
from audiomosaic.train.dist import DistInfo
from audiomosaic.data.onthefly import OnTheFlySpeech
from audiomosaic.train.pretrain import build_trainer, fill_batch, make_loader, pretrain, pretrain_dataset, train_step
from audiomosaic.train.runlog import WALL_CLOCK_KEYS, read_metrics

METRIC_KEYS = {"step", "epoch", "loss", "top1", "lr", "grad_norm", "skipped", *WALL_CLOCK_KEYS}


def tones(n: int, seconds: float, seed: int = 0) -> torch.Tensor:
    """n pure tones a third of an octave apart, plus a little noise: (n, S) at 16 kHz."""
    t = torch.arange(int(seconds * 16000)) / 16000
    f0 = 200.0 * 2.0 ** (torch.arange(n) / 3.0)
    noise = 0.05 * torch.randn(n, t.numel(), generator=torch.Generator().manual_seed(seed))
    return torch.sin(2 * math.pi * f0[:, None] * t) + noise


@pytest.fixture
def one_thread():
    """Tiny matrices gain nothing from a second thread, and lose a lot when the other core is busy."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_tiny_model_overfits_a_fixed_batch(one_thread: None) -> None:
    """16 clips, masked views, no waveform augmentation: NT-Xent falls from about chance towards its minimum 0."""
    n, steps = 16, 160
    cfg = resolve("smoke", {"encoder.spec_size": (64, 64), "frontend.target_frames": 64,
                            "frontend.num_mel_bins": 64, "augment.preset": "none", "augment.roll_mag": False,
                            "encoder.drop_path_rate": 0.0, "optim.lr": 2e-3, "optim.min_lr": 1e-5,
                            "optim.warmup_epochs": 0.0, "optim.weight_decay": 0.0, "data.batch_size": n,
                            "max_steps": steps})
    t = build_trainer(cfg, DistInfo(), steps_per_epoch=steps)
    wav = tones(n, 0.66)  # 64 frames
    lengths = torch.full((n,), wav.shape[1])
    history = []
    for _ in range(steps):
        out = train_step(t, wav, lengths)
        t.step += 1
        history.append((out["loss"].item(), out["top1"].item()))
    chance = math.log(2 * n - 1)  # the loss when all 2n - 1 candidates are equally likely
    assert history[0][0] > 0.5 * chance
    last = torch.tensor(history[-10:])
    assert last[:, 0].mean() < 0.05 * chance  # the minimum is ~0 once negatives sit far below the positive
    assert last[:, 1].mean() >= 0.98


def test_fill_batch_repeats_usable_clips() -> None:
    wav, lengths = torch.arange(6.0).reshape(3, 2), torch.tensor([2, 1, 2])
    w, n = fill_batch(wav, lengths, 5)
    assert w.shape == (5, 2) and torch.equal(w[3], wav[0]) and n.tolist() == [2, 1, 2, 2, 1]
    with pytest.raises(ValueError, match="none of the 4 files"):
        fill_batch(wav[:0], lengths[:0], 4)


def test_smoke_preset_end_to_end(tiny_corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "audiomosaic", "pretrain", "--preset", "smoke", "--run-dir", str(run),
                          f"data.root={tiny_corpus}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    cfg = resolve("smoke")
    saved = json.loads((run / "config.json").read_text())
    assert saved["config"]["encoder"]["embed_dim"] == cfg.encoder.embed_dim
    d = saved["derived"]
    assert (d["total_steps"], d["global_batch"], d["world_size"], d["lr"]) == (cfg.max_steps, 16, 1, cfg.optim.lr)
    assert d["tokens_per_view"] == [3 * 8, 8 * 4]  # 8x8 grid: 3 of 8 columns, 4 of 8 rows
    records = read_metrics(run / "metrics.jsonl")
    every = cfg.runtime.log_every
    assert [r["step"] for r in records] == list(range(every, cfg.max_steps + 1, every))
    assert all(set(r) == METRIC_KEYS and math.isfinite(r["loss"]) for r in records)
    ckpts = list_resume(run)
    assert [p.name for p in ckpts] == ["step-00000004.pt", "step-00000008.pt"]
    state = torch.load(ckpts[-1], map_location="cpu", weights_only=True)
    assert state["step"] == cfg.max_steps and state["config"]["max_steps"] == cfg.max_steps
    model = load_weights(run / "encoder.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(v, state["model"][k]), k
    init = load_weights(run / "init.safetensors")
    assert not torch.equal(init.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)


def test_non_finite_loss_raises(tiny_corpus: Path, tmp_path: Path) -> None:
    cfg = resolve("smoke", {"data.root": str(tiny_corpus), "tau": 0.0, "max_steps": 2, "data.num_workers": 0})
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        pretrain(cfg, tmp_path / "nan")


def test_unreadable_files_are_skipped_and_counted(tiny_corpus: Path, tmp_path: Path) -> None:
    """28 good clips + 4 corrupt files = exactly 2 batches of 16 per epoch: every epoch meets all 4 bad files."""
    good = json.loads((tiny_corpus / "pretrain.json").read_text())["data"][:28]
    bad = []
    for i in range(4):
        (tmp_path / f"bad{i}.wav").write_bytes(b"RIFF not really a wave file" * (i + 1))
        bad.append({"wav": str(tmp_path / f"bad{i}.wav"), "labels": ""})
    entries = [{**e, "wav": str((tiny_corpus / e["wav"]).resolve())} for e in good] + bad
    manifest = tmp_path / "pool.json"
    manifest.write_text(json.dumps({"data": entries}))
    cfg = resolve("smoke", {"data.manifest": str(manifest), "optim.epochs": 2, "data.num_workers": 0})
    summary = pretrain(cfg, tmp_path / "run")
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [(r["step"], r["epoch"], r["skipped"]) for r in records] == [(2, 0, 4), (4, 1, 4)]
    assert summary["step"] == 4 and math.isfinite(summary["loss"])


def test_main_job_path_with_the_smoke_preset(tiny_corpus: Path, tmp_path: Path) -> None:
    """No --preset = the main job; AUDIOMOSAIC_PRESET=smoke shrinks it: pre-train, then linear-probe every task of
    the corpus with the pre-trained and the random-init encoder, and print one table row per task."""
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "audiomosaic", "pretrain", "--run-dir", str(run), "--no-progress",
                          f"data.root={tiny_corpus}"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "AUDIOMOSAIC_PRESET": "smoke"})
    assert out.returncode == 0, out.stderr[-3000:]
    tasks = sorted(json.loads((tiny_corpus / "build_info.json").read_text())["tasks"])
    rows = {cells[0]: cells[1:] for cells in map(str.split, out.stdout.splitlines()) if cells[:1] and cells[0] in tasks}
    assert sorted(rows) == tasks
    for metric, pretrained, baseline in rows.values():
        assert metric == "accuracy" and 0.0 <= float(pretrained) <= 1.0 and 0.0 <= float(baseline) <= 1.0
    for sub in ("probe", "probe_init"):
        assert all((run / sub / task / "results.json").exists() for task in tasks)


def test_pretrain_pool_adds_the_onthefly_train_splits(tiny_corpus: Path, tmp_path: Path) -> None:
    # the large recipe's render-on-the-fly speech joins pretrain.json's pool, rendered in real loader workers
    root = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, root)
    stored = len(json.loads((root / "pretrain.json").read_text())["data"])
    n = 6 + stored % 2  # an even total: two full batches, as the sampler drops a partial one
    OnTheFlySpeech(n_items=n).write(root / "onthefly" / "speech_large.json", seed=0)
    cfg = resolve("smoke", {"data.root": str(root), "data.onthefly": ("all",), "data.batch_size": (stored + n) // 2,
                            "data.num_workers": 2})
    ds = pretrain_dataset(cfg, DistInfo())
    assert len(ds) == stored + n
    clip = int(cfg.data.clip_seconds * cfg.frontend.sample_rate)
    batches = list(make_loader(ds, cfg.data, 0, DistInfo(), torch.device("cpu")))
    index = torch.cat([b["index"] for b in batches])
    assert sorted(index.tolist()) == list(range(stored + n))  # every clip once, rendered ones included
    assert all(b["wav"].shape[1] == clip and b["target"].shape[1] == 0 for b in batches)
    rendered = [b["wav"][b["index"] >= stored] for b in batches]
    assert torch.cat(rendered).abs().amax(1).gt(0).all()  # speech, not silence
    with pytest.raises(ValueError, match="notes_large"):
        pretrain_dataset(resolve("smoke", {"data.root": str(root), "data.onthefly": ("notes_large",)}),
                         DistInfo())
