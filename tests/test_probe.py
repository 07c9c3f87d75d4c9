"""Probes: head independence, learning on separable features, loss choice, run files, CLI, resume."""
import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from audiomosaic.train.checkpoint import save_weights
from audiomosaic.config import ProbeConfig, resolve
from audiomosaic.presets import PROBE_PRESETS
from audiomosaic.data import Item, Manifest
from audiomosaic.cli.evaluate import probe_main as main
from audiomosaic.model import create_model
from audiomosaic.train.probe import (build_head, extract_features, head_specs, linear_probe_tasks, load_encoder,
                               loss_kind, run_probe, task_loss, task_manifests, train_heads)
from audiomosaic.train.runlog import MetricsLog, read_metrics


def _cfg(corpus, **kw):
    return resolve("smoke", {"data.root": str(corpus), **kw}, presets=PROBE_PRESETS, cls=ProbeConfig)


pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def nano():
    torch.manual_seed(0)
    return create_model("vit_nano", spec_size=(128, 128)).eval()


def test_layer_k_head_equals_a_single_layer_probe(tiny_corpus, nano, tmp_path):
    multi = run_probe(_cfg(tiny_corpus, all_layers=True, heads=("linear", "weighted")), nano, tmp_path / "all")
    single = run_probe(_cfg(tiny_corpus, layers=(2,)), nano, tmp_path / "one")
    by_head = {r["head"]: r for r in multi["results"]}
    assert set(by_head) == {"linear_block0", "linear_block1", "linear_block2", "linear_block3", "linear", "weighted"}
    assert single["results"][0]["head"] == "linear_block2"
    assert by_head["linear_block2"]["metrics"] == single["results"][0]["metrics"]
    epochs = [{k: v for k, v in r.items()} for r in read_metrics(tmp_path / "all" / "metrics.jsonl")
              if r.get("kind") == "epoch" and r["head"] == "linear_block2"]
    assert epochs == [r for r in read_metrics(tmp_path / "one" / "metrics.jsonl") if r.get("kind") == "epoch"]
    # the final output repeats the last block, and both heads start from fc_norm: identical training
    assert by_head["linear"]["metrics"] == by_head["linear_block3"]["metrics"]


def test_probe_learns_separable_features(tmp_path):
    g = torch.Generator().manual_seed(0)
    n, c, layers, d = 240, 4, 3, 64  # d: the nano width (heads start from its fc_norm)
    centres = 3.0 * torch.randn(c, d, generator=g)

    def split() -> dict[str, torch.Tensor]:
        labels = torch.arange(n) % c
        mean = torch.randn(n, layers, d, generator=g)
        mean[:, -1] += centres[labels]  # only the final entry carries the class
        return {"mean": mean, "target": torch.nn.functional.one_hot(labels, c).float()}

    cfg = replace(ProbeConfig(), optim=replace(ProbeConfig().optim, blr=0.05, epochs=15, warmup_epochs=1.0),
                  data=replace(ProbeConfig().data, batch_size=32))
    model = create_model("vit_nano", depth=2)
    heads = {name: build_head(kind, entry, model, c, 0) for name, (kind, entry) in
             {"final": ("linear", 2), "noise": ("linear", 0)}.items()}
    hist = train_heads(heads, split(), split(), cfg, multi_label=False, log=MetricsLog(tmp_path / "m.jsonl"))
    assert hist["final"][-1]["test_accuracy"] > 0.95
    assert hist["noise"][-1]["test_accuracy"] < 0.5  # held-out clips: the uninformative entry stays near 1/4


def test_loss_follows_the_multi_label_flag(tiny_corpus, nano, tmp_path):
    assert loss_kind("auto", True) == "bce" and loss_kind("auto", False) == "ce"
    logits, target = torch.randn(5, 3), torch.eye(3)[[0, 1, 2, 0, 1]]
    torch.testing.assert_close(task_loss(logits, target, "ce"), torch.nn.functional.cross_entropy(logits, target))
    torch.testing.assert_close(task_loss(logits, target, "bce"),
                               torch.nn.functional.binary_cross_entropy_with_logits(logits, target))
    train, test = task_manifests(_cfg(tiny_corpus).data)
    assert not train.multi_label
    single = run_probe(_cfg(tiny_corpus, **{"optim.epochs": 1}), nano, tmp_path / "single", train=train, test=test)
    assert single["loss"] == "ce" and single["results"][0]["metric"] == "accuracy"

    def two_labels(m: Manifest) -> Manifest:  # a genuinely multi-label version: every 3rd clip gets a 2nd label
        items = [Item(it.path, (it.labels[0], (it.labels[0] + 1) % m.num_classes) if i % 3 == 0 else it.labels)
                 for i, it in enumerate(m.items)]
        return replace(m, items=items, multi_label=True)

    multi = run_probe(_cfg(tiny_corpus, **{"optim.epochs": 1}), nano, tmp_path / "multi", train=two_labels(train),
                      test=two_labels(test))
    assert multi["loss"] == "bce" and multi["results"][0]["metric"] == "mAP"
    assert "accuracy" not in multi["results"][0]["metrics"]


def test_run_files_last_epoch_and_labelled_best(tiny_corpus, nano, tmp_path):
    out = run_probe(_cfg(tiny_corpus, report_best=True, eval_every=1), nano, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["config"]["data"]["task"] == "kws10" and cfg["derived"]["lr"] == pytest.approx(0.1 * 32 / 256)
    lines = read_metrics(tmp_path / "metrics.jsonl")
    epochs = [r for r in lines if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    row = out["results"][0]
    assert row["selection"] == "last_epoch" and row["value"] == epochs[-1]["test_accuracy"]
    assert row["best_on_test"]["value"] == max(r["test_accuracy"] for r in epochs)
    assert "best-on-test" in row["best_on_test"]["label"]
    assert json.loads((tmp_path / "results.json").read_text())["results"] == out["results"]


def test_feature_cache_gives_the_same_features(tiny_corpus, nano, tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOMOSAIC_CACHE", str(tmp_path))
    cfg = _cfg(tiny_corpus)
    _, test = task_manifests(cfg.data)
    plain = extract_features(nano, test, cfg, torch.device("cpu"))
    cached = extract_features(nano, test, replace(cfg, data=replace(cfg.data, cache_features=True)),
                              torch.device("cpu"))
    assert any((tmp_path / "features").iterdir())
    torch.testing.assert_close(cached["target"], plain["target"])
    torch.testing.assert_close(cached["mean"], plain["mean"], atol=2e-2, rtol=0)  # fbanks stored in fp16


def test_random_init_and_bad_inputs(tiny_corpus, nano):
    cfg = _cfg(tiny_corpus)
    fresh = load_encoder(nano, cfg, random_init=True)
    assert fresh.cfg == replace(nano.cfg) and not torch.equal(fresh.blocks[0].attn.qkv.weight,
                                                               nano.blocks[0].attn.qkv.weight)
    with pytest.raises(ValueError, match="available: inst11, kws10"):
        task_manifests(_cfg(tiny_corpus, **{"data.task": "nope"}).data)
    with pytest.raises(ValueError, match="outside"):
        head_specs(_cfg(tiny_corpus, layers=(9,)), depth=4)
    with pytest.raises(ValueError, match="allowed: linear, weighted, attentive"):
        head_specs(_cfg(tiny_corpus, heads=("mlp",)), depth=4)


def test_linear_probe_tasks_table(tiny_corpus, nano, tmp_path):
    rows = linear_probe_tasks(nano, tiny_corpus, ["kws10", "inst11"], preset="smoke", run_root=tmp_path,
                              overrides={"optim.epochs": 1})
    assert [r["task"] for r in rows] == ["kws10", "inst11"]
    assert all(r["head"] == "linear" and 0.0 <= r["value"] <= 1.0 for r in rows)
    assert (tmp_path / "inst11" / "results.json").is_file()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "audiomosaic", "probe", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_cli_help_bad_key_run_and_resume(tiny_corpus, nano, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert exit_.value.code == 0 and "--resume" in text and "restart head training" in text
    assert main(["--checkpoint", "x.pt", "optim.nope=1"]) == 2
    err = capsys.readouterr().err
    assert "optim.nope" in err and len(err.strip().splitlines()) == 1
    ckpt = save_weights(nano, tmp_path / "nano.safetensors")
    run = tmp_path / "run"
    args = ["--checkpoint", ckpt, "--preset", "smoke", "--run-dir", run, f"data.root={tiny_corpus}",
            "optim.epochs=2"]
    res = subprocess.run([sys.executable, "-m", "audiomosaic", "probe", *map(str, args)], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    assert "linear" in res.stdout and "accuracy" in res.stdout
    first = json.loads((run / "results.json").read_text())
    stamp = (run / "features.pt").stat().st_mtime_ns
    assert main([*map(str, args), "--resume"]) == 0
    assert (run / "features.pt").stat().st_mtime_ns == stamp  # features reused, heads retrained
    assert json.loads((run / "results.json").read_text())["results"] == first["results"]
