"""Spoof-detection fine-tuning (issue #15): the AASIST head in the engine (one step, top lr), per-set EER/AUC for
both heads through the ``spoof`` command, best-on-dev selection that never reads a test set, exact AASIST resume."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import audiomosaic.data.dataset as dataset_mod
import audiomosaic.train.spoof as spoof_mod
from audiomosaic.aasist import AudioMosaicAASIST
from audiomosaic.cli.spoof import main as spoof_main
from audiomosaic.config import DataConfig, FinetuneConfig, resolve
from audiomosaic.model import create_model
from audiomosaic.presets import FINETUNE_PRESETS
from audiomosaic.train.checkpoint import list_resume, load_weights, save_weights
from audiomosaic.train.finetune import build_classifier, run_finetune
from audiomosaic.train.optim import param_groups
from audiomosaic.train.probe import task_manifests
from audiomosaic.train.runlog import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread_module")

SETS = {"train": (12, "g_noise"), "dev": (4, "g_noise"), "test01": (4, "g_noise"), "test02": (4, "g_clip")}


def _fake(wav: np.ndarray, gen: str, rng: np.random.Generator) -> np.ndarray:
    if gen == "g_noise":
        return wav + 0.05 * rng.standard_normal(len(wav)).astype(np.float32)
    return np.clip(4.0 * wav, -0.3, 0.3)


@pytest.fixture(scope="module")
def track(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An EnvSDD-like track from the tiny corpus: <track>/{train,dev,test01,test02}.json (AudioSet JSON with a
    ``generator`` field, paths relative to the track), class_labels_indices.csv 0 spoof / 1 bonafide. test02's
    generator is unseen in training."""
    root = tmp_path_factory.mktemp("spoof_track") / "ata"
    (root / "audio").mkdir(parents=True)
    train, _ = task_manifests(DataConfig(root=str(tiny_corpus), task="kws10"))
    rng = np.random.default_rng(0)
    items = iter(train.items)
    for name, (n, gen) in SETS.items():
        entries = []
        for i in range(n):
            wav, sr = sf.read(next(items).path, dtype="float32")
            for label, g, x in (("bonafide", "bonafide", wav), ("spoof", gen, _fake(wav, gen, rng))):
                rel = f"audio/{name}_{i}_{g}.wav"
                sf.write(root / rel, x, sr)
                entries.append({"wav": rel, "labels": label, "generator": g, "group": f"{name}{i}"})
        (root / f"{name}.json").write_text(json.dumps({"data": entries}))
    with open(root / "class_labels_indices.csv", "w", newline="") as f:
        csv.writer(f).writerows([("index", "mid", "display_name"), (0, "spoof", "spoof"), (1, "bonafide", "bonafide")])
    return root


def _cfg(track: Path, **kw) -> FinetuneConfig:
    base = {"data.manifest": str(track / "train.json"), "test_sets": ("test01", "test02"), "data.batch_size": 8,
            "data.num_workers": 0, "encoder.depth": 2, "encoder.embed_dim": 64, "encoder.num_heads": 2,
            "optim.epochs": 2, "optim.warmup_epochs": 0.5, "runtime.ckpt_every": 2}
    return resolve("spoof_cpu", {**base, **kw}, presets=FINETUNE_PRESETS, cls=FinetuneConfig)


def test_presets_follow_the_authors_envsdd_recipe():
    cfg = resolve("envsdd_aasist", {}, presets=FINETUNE_PRESETS, cls=FinetuneConfig)
    assert cfg.head == "aasist" and cfg.optim.epochs == 20 and cfg.optim.blr == 1e-3 and cfg.data.batch_size == 128
    assert round(cfg.data.clip_seconds * 16000) == 64600 and cfg.frontend.target_frames == 1024
    assert (cfg.mixup, cfg.mask_t_prob, cfg.mask_f_prob, cfg.freqm, cfg.timem) == (0.0, 0.0, 0.0, 48, 192)
    assert cfg.class_weights == (0.1, 0.9) and cfg.eer and cfg.dev_manifest == "dev"
    assert cfg.test_sets == ("test01", "test02", "test03", "test04")


def test_aasist_head_trains_one_step_with_the_top_lr(track: Path):
    cfg = _cfg(track, head="aasist")
    model = build_classifier("random", cfg, num_classes=2)
    assert isinstance(model, AudioMosaicAASIST) and model.head is None
    groups = param_groups(model, cfg.optim.weight_decay, cfg.optim.layer_decay)
    top = max(g["lr_scale"] for g in groups)
    head_groups = [g for g in groups if any(n.startswith("aasist.") for n in g["names"])]
    assert top == 1.0 and all(g["lr_scale"] == top for g in head_groups)
    in_top = {n for g in groups if g["lr_scale"] == top for n in g["names"]}
    assert {n for n, _ in model.named_parameters() if n.startswith("aasist.")} <= in_top
    assert not any(n.startswith(("blocks.", "patch_embed.")) for n in in_top)  # below: decayed lr
    opt = torch.optim.AdamW([{"params": g["params"], "lr": 1e-3 * g["lr_scale"]} for g in groups])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    spec = torch.randn(4, 1, cfg.frontend.target_frames, cfg.frontend.num_mel_bins)
    model.train()
    F.cross_entropy(model(spec), torch.tensor([0, 1, 0, 1])).backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert "aasist.out_layer.weight" in changed and "blocks.0.attn.qkv.weight" in changed
    with pytest.raises(ValueError, match="binary"):
        build_classifier("random", cfg, num_classes=3)


def test_spoof_command_writes_per_set_eer_and_auc_for_both_heads(track: Path, tmp_path: Path):
    torch.manual_seed(0)
    pre = save_weights(create_model("vit_nano", spec_size=(128, 128)), tmp_path / "pre.safetensors")
    common = ["--checkpoint", str(pre), "--tracks", "ata", "--seeds", "0", "--runs", str(tmp_path / "runs"),
              "--table", str(tmp_path / "table_spoof.csv"), f"data.manifest={track / 'train.json'}",
              "test_sets=('test01','test02')", "data.batch_size=8", "data.num_workers=0", "optim.epochs=2",
              "max_steps=3"]
    assert spoof_main([*common, "--heads", "linear", "--models", "pretrained", "random_init", "--generators"]) == 0
    assert spoof_main([*common, "--heads", "aasist", "--models", "pretrained"]) == 0
    df = pd.read_csv(tmp_path / "table_spoof.csv")
    assert set(df["metric"]) == {"eer", "eer_interp", "auc"} and set(df["epoch_choice"]) == {"last", "best_dev"}
    assert set(df["test_set"]) == {"dev", "test01", "test02"}
    for head, models in (("linear", {"pretrained", "random_init"}), ("aasist", {"pretrained"})):
        sub = df[(df["head"] == head) & (df["generator"] == "all")]
        assert set(sub["model"]) == models and len(sub) == len(models) * 3 * 3 * 2, head
    assert {"g_noise", "g_clip"} <= set(df["generator"])  # per-generator rows were asked for the linear runs
    assert df[["git_sha", "machine", "config_hash", "source"]].notna().all().all()
    assert ((df["value"] >= 0) & (df["value"] <= 1)).all()
    # the random-init run has the checkpoint's architecture
    rand = json.loads((tmp_path / "runs" / "ata-linear-random_init-s0" / "config.json").read_text())
    assert rand["config"]["encoder"]["embed_dim"] == 64 and rand["config"]["encoder"]["depth"] == 4
    # the fine-tuned AASIST model reloads through the generic loader
    model = load_weights(tmp_path / "runs" / "ata-aasist-pretrained-s0" / "model.safetensors")
    assert isinstance(model, AudioMosaicAASIST)
    # re-running reads the finished runs back and replaces (not duplicates) their rows
    assert spoof_main([*common, "--heads", "aasist", "--models", "pretrained"]) == 0
    assert len(pd.read_csv(tmp_path / "table_spoof.csv")) == len(df)


def test_best_on_dev_selection_never_reads_a_test_set(track: Path, tmp_path: Path, monkeypatch):
    events: list[str] = []
    real_read, real_task = dataset_mod.read_audio, spoof_mod.finetune_task

    def read(path, *a, **k):
        events.append(Path(path).name.split("_")[0])  # the set name prefixes every file name
        return real_read(path, *a, **k)

    def task(*a, **k):
        out = real_task(*a, **k)
        events.append("TRAINING DONE")
        return out

    monkeypatch.setattr(dataset_mod, "read_audio", read)
    monkeypatch.setattr(spoof_mod, "finetune_task", task)
    out = run_finetune(_cfg(track, **{"optim.epochs": 3}), "random", tmp_path / "run")
    done = events.index("TRAINING DONE")
    assert set(events[:done]) == {"train", "dev"}  # training + per-epoch evaluation: train and dev only
    assert {"test01", "test02"} <= set(events[done:])
    epochs = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "epoch"]
    dev_eer = [r["test_eer"] for r in epochs]
    assert out["best_dev"]["epoch"] == int(np.argmin(dev_eer)) + 1  # argmin: ties keep the earliest epoch
    assert out["best_dev"]["dev_value"] == min(dev_eer)
    derived = json.loads((tmp_path / "run" / "config.json").read_text())["derived"]
    assert derived["n_test"] == 8  # the per-epoch evaluation split is dev (4 bona fide + 4 fakes)
    rows = {(r["epoch_choice"], r["set"]): r for r in out["sets"] if r["generator"] == "all"}
    assert rows[("last", "dev")]["eer_interp"] == pytest.approx(epochs[-1]["test_eer"], abs=1e-6)
    assert rows[("best_dev", "test02")]["epoch"] == out["best_dev"]["epoch"]
    assert "test01" in out["selection"]  # the authors' choice is named


def test_aasist_finetune_resumes_exactly(track: Path, tmp_path: Path):
    cfg = _cfg(track, head="aasist")
    out = run_finetune(cfg, "random", tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    newest = list_resume(tmp_path / "b")[-1]
    newest.unlink()  # as if killed before the last checkpoint: resume from a mid-epoch one
    steps = json.loads((tmp_path / "a" / "config.json").read_text())["derived"]["steps_per_epoch"]
    assert int(list_resume(tmp_path / "b")[-1].stem.split("-")[1]) % steps != 0
    resumed = run_finetune(cfg, None, tmp_path / "b", resume=True)
    assert resumed["sets"] == out["sets"] and resumed["best_dev"] == out["best_dev"]
    assert read_metrics(tmp_path / "b" / "metrics.jsonl") == read_metrics(tmp_path / "a" / "metrics.jsonl")
    for name in ("model.safetensors", "best.safetensors"):
        a, b = load_file(tmp_path / "a" / name), load_file(tmp_path / "b" / name)
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), name


def test_spoof_figure_draws_the_table_values_byte_stably(tmp_path: Path):
    from audiomosaic.lab import figures

    prov = {"source": "test fixture", "git_sha": "0000000", "machine": "test", "config_hash": "0" * 12}
    rows = [{"track": "ata", "head": h, "model": m, "test_set": s, "generator": "all", "metric": "eer",
             "value": (i + 1) / 100 + seed / 1000, "epoch_choice": c, "seed": seed, **prov}
            for i, (h, m, s) in enumerate([(h, m, s) for h in ("linear", "aasist") for m in ("pretrained",)
                                           for s in ("dev", "test01")])
            for c in ("last", "best_dev") for seed in (0, 2)]
    pd.DataFrame(rows).to_csv(tmp_path / "table_spoof.csv", index=False)
    fig = figures.paper_figure("fig_spoof", tmp_path, tmp_path / "a", formats=("png", "svg"))
    figures.paper_figure("fig_spoof", tmp_path, tmp_path / "b", formats=("png", "svg"))
    assert [(tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
            for f in ("fig_spoof.png", "fig_spoof.svg")] == [True, True]
    heights = sorted(round(p.get_height(), 6) for p in fig.axes[0].patches)
    assert heights == [1.1, 2.1, 3.1, 4.1]  # EER % of the last epoch, the mean of seeds 0 and 2
    assert [ax.get_title() for ax in fig.axes] == ["ata: last epoch", "ata: best dev epoch"]
