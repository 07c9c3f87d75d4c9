"""The one config system: overrides, type checks, presets, round trips, pinned hashes and the AUDIOMOSAIC_PRESET
switch."""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import subprocess
import sys

import pytest
import torch

from audiomosaic.cli import evaluate as evaluate_cli
from audiomosaic.cli import pretrain as pretrain_cli
from audiomosaic.config import (PRESET_ENV, DownstreamConfig, FinetuneConfig, MaskConfig, PretrainConfig, ProbeConfig,
                                apply_overrides, config_changes, config_hash, from_dict, parse_kv, preset_from_env,
                                resolve, to_dict)
from audiomosaic.frontend import num_frames
from audiomosaic.presets import FINETUNE_PRESETS, PROBE_PRESETS, REGISTRIES, TRAIN_PRESETS

CLASSES = {"train": PretrainConfig, "probe": ProbeConfig, "finetune": FinetuneConfig}
# config_hash of every run preset. Committed result rows (paper_figures/results/*.csv) and cached encoders are keyed
# by it: moving fields (DownstreamConfig) or adding them (HASH_IF_SET) must leave every one of these unchanged.
PRESET_HASHES = {
    "train/smoke": "9cc290585c7e", "train/cpu": "255ee96fb55f", "train/gpu": "cfea2d51a8d0",
    "train/paper": "df7a62ee8158", "train/repro_cpu": "2b6206deac3a", "train/repro_gpu": "310a97839890",
    "probe/smoke": "57dbc1bc60ab", "probe/cpu": "6307049a1bd2", "probe/gpu": "29695952a28a",
    "probe/paper": "2305a2507f44", "probe/paper_layers": "7a2c78bc6355", "probe/paper_esc50": "0d1cde01adb7",
    "finetune/smoke": "00aa84ceae60", "finetune/cpu": "b19c22af709c", "finetune/gpu": "9bf16a3ea537",
    "finetune/repro_cpu": "b5ae61550f4b", "finetune/paper": "48cfa667baa2", "finetune/paper_spc2": "8c8037fc1706",
    "finetune/paper_esc50": "aaae8c6ffd38",
}


@pytest.mark.parametrize("key", ["optim.lrr", "nosuch.x", "tauu", "mask.ratio_time.x"])
def test_unknown_keys_are_rejected_by_name(key: str) -> None:
    with pytest.raises(ValueError, match=key.split(".x")[0].replace(".", r"\.")):
        apply_overrides(PretrainConfig(), {key: "1"})


@pytest.mark.parametrize("key, value", [("optim.epochs", "1.5"), ("runtime.compile", "'yes'"),
                                        ("encoder.spec_size", "(128,)"), ("data.batch_size", "big"),
                                        ("optim.betas", "0.9"), ("tau", "True")])
def test_wrong_types_are_rejected_by_name(key: str, value: str) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        apply_overrides(PretrainConfig(), {key: value})


def test_out_of_range_choices_list_the_allowed_values() -> None:
    with pytest.raises(ValueError, match="paper, reference"):
        apply_overrides(PretrainConfig(), {"mask.layout": "diagonal"})
    with pytest.raises(ValueError, match="fp16"):
        apply_overrides(PretrainConfig(), {"runtime.precision": "fp8"})
    with pytest.raises(ValueError, match=r"^config key 'encoder\.grad_ckpt_policy': 'all'.*allowed: block, attn, mlp, "
                                         r"matmul$"):
        apply_overrides(PretrainConfig(), parse_kv(["encoder.grad_ckpt_policy=all"]))
    for cls in (ProbeConfig, FinetuneConfig):  # the shared field, checked once for both
        assert apply_overrides(cls(), {"loss": "ce"}).loss == "ce"
        with pytest.raises(ValueError, match=r"config key 'loss'.*allowed: auto, bce, ce"):
            apply_overrides(cls(), {"loss": "mse"})
    with pytest.raises(ValueError, match=r"MaskConfig\.mode='diag'; allowed: tf, tt, ff, unstructured, none"):
        apply_overrides(MaskConfig(mode="diag"), {})  # type: ignore[arg-type]  # built directly, checked on use
    assert apply_overrides(PretrainConfig(), {"mask.mode": "tt"}).mask.mode == "tt"  # strings are not literal_eval'd


def test_dotted_and_nested_overrides_agree_and_parse_literals() -> None:
    dotted = apply_overrides(PretrainConfig(), parse_kv(["mask.ratio_time=0.5", "encoder.spec_size=(256, 128)",
                                                         "optim.lr=1"]))
    nested = apply_overrides(PretrainConfig(), {"mask": {"ratio_time": 0.5}, "encoder": {"spec_size": [256, 128]},
                                                "optim": {"lr": 1.0}})
    assert dotted == nested
    assert dotted.encoder.spec_size == (256, 128) and type(dotted.optim.lr) is float  # int widened to float
    assert dotted.mask.ratio_freq == PretrainConfig().mask.ratio_freq  # untouched siblings survive


def test_name_lists_accept_bare_and_comma_separated_names() -> None:
    for text, want in (("all", ("all",)), ("notes_large, speech_large", ("notes_large", "speech_large")),
                       ("('all',)", ("all",))):
        assert apply_overrides(PretrainConfig(), parse_kv([f"data.onthefly={text}"])).data.onthefly == want
    with pytest.raises(ValueError, match=r"encoder\.spec_size"):  # numbers still need literal syntax
        apply_overrides(PretrainConfig(), {"encoder.spec_size": "128,x"})


def test_overrides_never_mutate() -> None:
    base = PretrainConfig()
    new = apply_overrides(base, {"optim.lr": 1e-3})
    assert base.optim.lr == 6e-4 and new.optim.lr == 1e-3
    with pytest.raises(dataclasses.FrozenInstanceError):
        new.optim.lr = 0.1  # type: ignore[misc]


@pytest.mark.parametrize("preset", list(TRAIN_PRESETS))
def test_presets_resolve_consistently_and_round_trip(preset: str) -> None:
    cfg = resolve(preset)
    # The model input must be the front end's output, and the clip must not be longer than the input.
    assert cfg.encoder.spec_size == (cfg.frontend.target_frames, cfg.frontend.num_mel_bins)
    assert num_frames(int(cfg.data.clip_seconds * cfg.frontend.sample_rate)) <= cfg.frontend.target_frames
    d = to_dict(cfg)
    assert from_dict(PretrainConfig, json.loads(json.dumps(d))) == cfg
    buf = io.BytesIO()
    torch.save({"config": d}, buf)
    buf.seek(0)
    assert from_dict(PretrainConfig, torch.load(buf, weights_only=True)["config"]) == cfg


def test_paper_preset_is_the_authors_recipe() -> None:
    """docs/method.md §4 and §7, value by value."""
    c = resolve("paper")
    assert (c.encoder.embed_dim, c.encoder.depth, c.encoder.num_heads, c.encoder.patch_size) == (768, 12, 12, 16)
    assert c.encoder.spec_size == (1024, 128) and c.encoder.grad_ckpt_fraction == 0.7
    assert c.encoder.drop_path_rate == 0.1 and (c.encoder.projector_hidden, c.encoder.projector_out) == (512, 128)
    assert (c.optim.lr, c.optim.blr, c.optim.min_lr, c.optim.weight_decay) == (6e-4, 0.0, 1e-6, 0.05)
    assert (c.optim.epochs, c.optim.warmup_epochs, c.optim.betas, c.optim.grad_clip) == (400, 1.0, (0.9, 0.999), 0.0)
    assert (c.data.batch_size, c.runtime.precision, c.runtime.compile, c.runtime.seed) == (512, "bf16", True, 42)
    assert (c.mask.mode, c.mask.ratio_time, c.mask.ratio_freq, c.tau) == ("tf", 0.6, 0.4, 0.1)
    assert c.augment.preset == "full" and c.augment.roll_mag


def test_smoke_and_cpu_presets_are_small() -> None:
    smoke, cpu, gpu = (resolve(p) for p in ("smoke", "cpu", "gpu"))
    assert smoke.data.recipe == "tiny" and 0 < smoke.max_steps <= 20 and smoke.encoder.embed_dim <= 64
    assert cpu.data.recipe == "default" and cpu.encoder.embed_dim <= 192 and cpu.encoder.spec_size[0] <= 256
    assert gpu.encoder.embed_dim == 768 and gpu.runtime.precision == "bf16" and gpu.runtime.compile


def test_env_switch_is_read_by_the_entry_points_not_by_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PRESET_ENV, "smoke")
    assert preset_from_env("cpu") == "smoke"
    assert resolve("cpu").data.recipe == "default"  # resolve is pure: the switch does not reach it
    # the CLI reads it once and keeps the overrides
    cfg, preset = pretrain_cli._config(pretrain_cli._parser().parse_intermixed_args(["--preset", "cpu",
                                                                                     "optim.lr=2e-3"]), False)
    assert (preset, cfg) == ("smoke", resolve("smoke", {"optim.lr": 2e-3}))
    args = argparse.Namespace(preset="cpu", overrides=["optim.epochs=1"], checkpoint="x", resume=False, run_dir=None)
    cfg, run_dir, _ = evaluate_cli._run("probe", args, PROBE_PRESETS, ProbeConfig, lambda cfg, run_dir: {})
    assert cfg == resolve("smoke", {"optim.epochs": 1}, presets=PROBE_PRESETS, cls=ProbeConfig)
    assert run_dir.name.startswith("probe-smoke-")
    monkeypatch.setenv(PRESET_ENV, "")
    assert preset_from_env("cpu") == "cpu"  # empty = unset
    monkeypatch.delenv(PRESET_ENV)
    assert preset_from_env("cpu") == "cpu"
    with pytest.raises(ValueError, match="'nosuch'.*smoke"):
        resolve("nosuch")
    with pytest.raises(ValueError, match="unknown preset"):
        resolve("huge")


def test_cli_bad_key_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert pretrain_cli.main(["--preset", "smoke", "optim.lrr=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "optim.lrr" in err and "\n" not in err and "Traceback" not in err
    assert pretrain_cli.main(["--preset", "smoke", "optim.epochs=many"]) == 2
    assert "optim.epochs" in capsys.readouterr().err
    assert pretrain_cli.main(["--preset", "smoke", "no_equals_sign"]) == 2
    assert "key=value" in capsys.readouterr().err


def test_cli_help_lists_presets_and_points_to_the_keys() -> None:
    out = subprocess.run([sys.executable, "-m", "audiomosaic", "pretrain", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0
    assert all(p in out.stdout for p in TRAIN_PRESETS) and "PretrainConfig" in out.stdout
    assert "objective=mae" in out.stdout  # the generative baseline's switch is discoverable from --help
    bad = subprocess.run([sys.executable, "-m", "audiomosaic", "pretrain", "--preset", "smoke", "mask.ratio_tim=0.5"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "mask.ratio_tim" in bad.stderr and "Traceback" not in bad.stderr


def test_config_hash_ignores_later_fields_left_at_their_default() -> None:
    # committed result rows and cached encoders are keyed by this hash: data.onthefly (added later) must not move
    # it while unset; the reproduction's tf_paper seed-0 encoder keeps the hash its rows were recorded under
    from audiomosaic.repro.suites import TF, Context, pretrain_config

    cfg = pretrain_config(Context(), TF, 0)
    assert config_hash(cfg) == "ce23d6e4378d"
    assert config_hash(apply_overrides(cfg, {"data.onthefly": ("all",)})) != config_hash(cfg)


def test_run_presets_keep_their_pinned_hashes() -> None:
    # presets added later are not pinned until results are recorded with them; the pinned ones must stay
    got = {}
    for key in PRESET_HASHES:
        kind, name = key.split("/")
        got[key] = config_hash(resolve(name, presets=REGISTRIES[kind], cls=CLASSES[kind]))
    assert got == PRESET_HASHES


def test_probe_and_finetune_share_their_common_fields() -> None:
    shared = {f.name for f in dataclasses.fields(DownstreamConfig)}
    assert {"frontend", "encoder", "data", "optim", "runtime", "loss", "eer", "eval_every", "report_best"} == shared
    for cls in (ProbeConfig, FinetuneConfig):
        assert issubclass(cls, DownstreamConfig) and shared <= {f.name for f in dataclasses.fields(cls)}
        cfg = apply_overrides(cls(), {"eer": True, "eval_every": 2, "report_best": True, "optim.epochs": 3})
        assert (cfg.eer, cfg.eval_every, cfg.report_best, cfg.optim.epochs) == (True, 2, True, 3)
    # each keeps its own data/optim defaults (the authors' AS-20K probe and fine-tune recipes)
    assert (ProbeConfig().data.batch_size, ProbeConfig().optim.blr) == (16, 1e-3)
    assert (FinetuneConfig().data.batch_size, FinetuneConfig().optim.layer_decay) == (64, 0.65)


@pytest.mark.parametrize("cls, presets", [(PretrainConfig, TRAIN_PRESETS), (FinetuneConfig, FINETUNE_PRESETS)])
def test_checkpoint_configs_from_before_a_new_field_still_match(cls: type, presets: dict) -> None:
    # the pre-training and fine-tuning resumes compare a checkpoint's saved config through config_changes
    cfg = resolve("smoke", {}, presets=presets, cls=cls)
    saved = to_dict(cfg)
    del saved["data"]["onthefly"]  # a checkpoint written before data.onthefly existed
    assert config_changes(saved, cfg) == []
    saved["optim"]["lr"] = 1.0
    assert config_changes(saved, cfg) == ["optim"]
