"""Fine-tuning: the batch augmentations, the sampler, initialisation from a pre-training checkpoint, a tiny run
that learns, exact resume, ESC-50-style folds and the CLI."""
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from audiomosaic.train.checkpoint import list_resume, save_weights
from audiomosaic.config import FinetuneConfig, resolve
from audiomosaic.presets import FINETUNE_PRESETS
from audiomosaic.cli.evaluate import finetune_main as main
from audiomosaic.augment.supervised import beta, mixup, spec_augment, spec_noise
from audiomosaic.train.finetune import WeightedEpochBatchSampler, build_classifier, class_balanced_weights, run_finetune
from audiomosaic.masking import time_freq_mask
from audiomosaic.model import create_model
from audiomosaic.train.probe import task_manifests
from audiomosaic.train.runlog import read_metrics


pytestmark = pytest.mark.usefixtures("one_thread_module")


def _cfg(corpus, **kw):
    base = {"data.root": str(corpus), "data.task": "inst11", "encoder.depth": 2, "encoder.embed_dim": 64,
            "encoder.num_heads": 2, "optim.blr": 3e-2, "mixup": 0.0, "optim.warmup_epochs": 1.0}
    return resolve("smoke", {**base, **kw}, presets=FINETUNE_PRESETS, cls=FinetuneConfig)


# ------------------------------------------------------------------------------------------ augmentations

def test_mixup_mixes_waveforms_and_one_hot_labels():
    b, s = 8, 50
    g = torch.Generator().manual_seed(0)
    wav, target = torch.randn(b, s, generator=g), torch.eye(b)  # clip i has its own class i
    lengths = torch.arange(b) + 40
    mixed, t, n = mixup(wav, target, lengths, prob=1.0, generator=g)
    torch.testing.assert_close(t.sum(1), torch.ones(b))
    for i in range(b):
        (partner,) = [j for j in range(b) if j != i and t[i, j] > 0]  # one partner, never itself
        lam = t[i, i]
        assert 0 < lam < 1
        torch.testing.assert_close(mixed[i], lam * wav[i] + (1 - lam) * wav[partner])
        assert n[i] == max(lengths[i], lengths[partner])
    same = mixup(wav, target, lengths, prob=0.0, generator=g)
    assert torch.equal(same[0], wav) and torch.equal(same[1], target)


def test_mixup_lambda_is_beta_10_10():
    lam = beta(20000, 10.0, torch.Generator().manual_seed(0)).double()
    assert lam.mean() == pytest.approx(0.5, abs=0.005)
    assert lam.std() == pytest.approx((0.25 / 21) ** 0.5, rel=0.03)  # Beta(a, a): var = 1 / (4 (2a + 1))
    assert torch.equal(beta(5, 10.0, torch.Generator().manual_seed(1)), beta(5, 10.0, torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("axis", ["freq", "time"])
def test_spec_augment_sets_one_contiguous_band_below_the_max_width(axis):
    b, t, f, max_w = 400, 40, 24, 10
    spec = torch.ones(b, 1, t, f)
    out = spec_augment(spec, max_w if axis == "freq" else 0, max_w if axis == "time" else 0,
                       torch.Generator().manual_seed(0), fill=0.0)
    dropped = out[:, 0] == 0  # (B, T, F)
    lines = dropped.all(dim=1) if axis == "freq" else dropped.all(dim=2)  # (B, F) or (B, T): whole rows/columns
    assert torch.equal(dropped.any(dim=1) if axis == "freq" else dropped.any(dim=2), lines)
    widths = lines.sum(1)
    for row, w in zip(lines, widths):
        idx = torch.nonzero(row).flatten()
        assert w == 0 or torch.equal(idx, torch.arange(idx[0], idx[0] + w))  # contiguous
    assert widths.max() == max_w - 1 and widths.min() == 0  # uniform in [0, max_w)
    both = spec_augment(spec, 5, 7, torch.Generator().manual_seed(0), fill=-3.0)
    assert set(both.unique().tolist()) <= {-3.0, 1.0}


def test_spec_noise_adds_small_noise_and_rolls_each_clip_in_time():
    b, t, f = 16, 30, 4
    spec = (100.0 * torch.arange(t, dtype=torch.float32))[None, None, :, None].expand(b, 1, t, f).contiguous()
    out = spec_noise(spec, torch.Generator().manual_seed(0))
    shifts = set()
    for i in range(b):
        shift = int(torch.round(out[i, 0, 0, 0] / 100)) * -1 % t  # frame 0 now holds frame -shift
        shift = shift - t if shift > t // 2 else shift
        rolled = torch.roll(spec[i], shift, dims=1)
        noise = out[i] - rolled
        assert abs(shift) <= 10 and (noise >= 0).all() and (noise < 0.1).all()
        shifts.add(shift)
    assert len(shifts) > 3


def test_token_mask_keeps_whole_columns_and_rows():
    grid, b = (64, 8), 6
    keep, restore, mask = time_freq_mask(b, grid, 0.2, 0.2, torch.Generator().manual_seed(0))
    assert keep.shape == (b, 51 * 6)  # floor(64 x 0.8) columns x floor(8 x 0.8) rows (docs/method.md §8)
    kept = ~mask.view(b, *grid)  # time-major tokens
    cols, rows = kept.any(dim=2), kept.any(dim=1)
    assert torch.equal(kept, cols[:, :, None] & rows[:, None, :])  # kept iff its column and its row are kept
    assert (cols.sum(1) == 51).all() and (rows.sum(1) == 6).all()
    x = torch.randn(b, 512, 3)
    from audiomosaic.masking import gather_tokens, restore_tokens
    torch.testing.assert_close(restore_tokens(gather_tokens(x, keep), restore)[kept.flatten(1)],
                               x[kept.flatten(1)])


def test_class_balanced_sampler_balances_and_is_seeded():
    targets = np.zeros((100, 2), np.float32)
    targets[:90, 0] = 1
    targets[90:, 1] = 1
    w = class_balanced_weights(targets)
    assert w[95] / w[0] == pytest.approx(90.01 / 10.01)
    sampler = WeightedEpochBatchSampler(w, 400, 20, seed=3)
    sampler.set_epoch(0)
    drawn = np.concatenate(list(sampler))
    assert len(drawn) == 400 and 0.4 < (drawn >= 90).mean() < 0.6  # ~half from the 10% class
    again = WeightedEpochBatchSampler(w, 400, 20, seed=3)
    again.set_epoch(0, start=5)
    assert [b for b in again] == list(sampler)[5:]  # same (seed, epoch) -> same draw; resume skips batches
    sampler.set_epoch(1)
    assert not np.array_equal(np.concatenate(list(sampler)), drawn)


# ------------------------------------------------------------------------------------------- model and runs

def test_classifier_from_pretraining_checkpoint(tmp_path, tiny_corpus):
    torch.manual_seed(0)
    pre = create_model("vit_nano", spec_size=(128, 128))  # with projector, like a pre-training export
    path = save_weights(pre, tmp_path / "pre.safetensors")
    cfg = _cfg(tiny_corpus, **{"frontend.target_frames": 64, "encoder.drop_path_rate": 0.2})
    clf = build_classifier(str(path), cfg, num_classes=11)
    assert clf.grid == (4, 8) and clf.projector is None and clf.head.out_features == 11
    assert clf.cfg.depth == pre.cfg.depth and clf.cfg.drop_path_rate == 0.2  # architecture from the checkpoint
    torch.testing.assert_close(clf.blocks[3].mlp.fc2.weight, pre.blocks[3].mlp.fc2.weight)
    torch.testing.assert_close(clf.fc_norm.weight, pre.fc_norm.weight)
    assert clf.pos_embed.shape[1] == 1 + 32 and clf.head.weight.std() < 1e-4
    scratch = build_classifier("random", cfg, num_classes=11)  # cfg.encoder: depth 2
    assert scratch.cfg.depth == 2 and scratch.grid == (4, 8)


def test_tiny_finetune_learns_and_resumes_exactly(tiny_corpus, tmp_path):
    cfg = _cfg(tiny_corpus, **{"optim.epochs": 6, "runtime.ckpt_every": 5, "mixup": 0.5})
    train, _ = task_manifests(cfg.data)
    out = run_finetune(cfg, "random", tmp_path / "a", train=train, test=train)  # evaluate on the train clips
    epochs = [r for r in read_metrics(tmp_path / "a" / "metrics.jsonl") if r["kind"] == "epoch"]
    assert len(epochs) == 6 and epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert out["value"] > 1.5 / train.num_classes  # above chance (1 / 11) on the training clips
    derived = json.loads((tmp_path / "a" / "config.json").read_text())["derived"]
    assert derived["lr"] == pytest.approx(3e-2 * 16 / 256) and derived["train_tokens"] == 6 * 6

    shutil.copytree(tmp_path / "a", tmp_path / "b")
    newest = list_resume(tmp_path / "b")[-1]
    newest.unlink()  # as if killed before the last checkpoint: resume from a mid-epoch one
    assert int(list_resume(tmp_path / "b")[-1].stem.split("-")[1]) % derived["steps_per_epoch"] != 0
    with pytest.raises(ValueError, match="already holds checkpoints"):
        run_finetune(cfg, "random", tmp_path / "b", train=train, test=train)
    resumed = run_finetune(cfg, None, tmp_path / "b", train=train, test=train, resume=True)
    assert resumed["metrics"] == out["metrics"]
    assert read_metrics(tmp_path / "b" / "metrics.jsonl") == read_metrics(tmp_path / "a" / "metrics.jsonl")
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_esc50_style_folds_average(tiny_corpus, tmp_path):
    root = tmp_path / "esc50"
    (root / "meta").mkdir(parents=True)
    (root / "audio").mkdir()
    train, _ = task_manifests(_cfg(tiny_corpus).data)
    rows = []
    for i, item in enumerate(train.items[:50]):
        name = f"{i % 5 + 1}-{i}-A-{item.labels[0]}.wav"
        shutil.copy(item.path, root / "audio" / name)
        rows.append({"filename": name, "fold": i % 5 + 1, "target": item.labels[0],
                     "category": train.classes[item.labels[0]], "esc10": "False", "src_file": str(i), "take": "A"})
    with open(root / "meta" / "esc50.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cfg = _cfg(tiny_corpus, **{"data.manifest": str(root), "folds": (1, 2), "optim.epochs": 1, "max_steps": 2})
    out = run_finetune(cfg, "random", tmp_path / "run")
    assert set(out["folds"]) == {"1", "2"} and out["folds"]["1"]["n_test"] == 10
    assert out["value"] == pytest.approx(np.mean([out["folds"][k]["value"] for k in ("1", "2")]))
    assert (tmp_path / "run" / "fold2" / "results.json").is_file()
    with pytest.raises(ValueError, match="ESC-50 root"):
        run_finetune(_cfg(tiny_corpus, folds=(1,)), "random", tmp_path / "bad")


def test_cli(tiny_corpus, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "--resume" in capsys.readouterr().out
    assert main(["--checkpoint", "random", "mixupp=0.1"]) == 2
    err = capsys.readouterr().err
    assert "mixupp" in err and len(err.strip().splitlines()) == 1
    assert main(["--preset", "smoke"]) == 2 and "--checkpoint is required" in capsys.readouterr().err
    pre = save_weights(create_model("vit_nano", spec_size=(128, 128)), tmp_path / "pre.safetensors")
    args = ["--checkpoint", pre, "--preset", "smoke", "--run-dir", tmp_path / "run", f"data.root={tiny_corpus}",
            "max_steps=3", "optim.epochs=1"]
    res = subprocess.run([sys.executable, "-m", "audiomosaic", "finetune", *map(str, args)], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    result = json.loads((tmp_path / "run" / "results.json").read_text())
    assert result["selection"] == "last_epoch" and result["metric"] == "accuracy"
    assert "accuracy" in res.stdout

