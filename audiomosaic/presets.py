"""Presets: named sets of dotted overrides, plain dicts read by ``config.resolve`` and ``config.encoder_config``.

``TRAIN_PRESETS`` / ``PROBE_PRESETS`` / ``FINETUNE_PRESETS`` apply to ``PretrainConfig()`` / ``ProbeConfig()`` /
``FinetuneConfig()`` (``python -m audiomosaic pretrain|probe|finetune --preset NAME``); ``ENCODER_PRESETS`` are the
timm-style model sizes read by ``create_model``. Nothing here imports the config classes: the values are checked when
a preset is applied (``apply_overrides``), and tests/test_config.py resolves every entry.
"""
from __future__ import annotations

from typing import Any

# Per-dataset normalisation constants (docs/method.md §2): (fbank - mean) / (2 * std).
NORM_STATS: dict[str, tuple[float, float]] = {
    "audioset": (-4.2677393, 4.5689974),  # also pre-training and EnvSDD
    "esc50": (-6.6268077, 5.358466),
    "spc": (-6.845978, 5.5654526),
}

# --------------------------------------------------------------------------------------------------------------
# Encoder presets (timm-style registry read by create_model)
# --------------------------------------------------------------------------------------------------------------

ENCODER_PRESETS: dict[str, dict[str, Any]] = {
    "vit_nano": dict(embed_dim=64, depth=4, num_heads=2),  # CPU tests and smoke runs
    "vit_mini": dict(embed_dim=128, depth=6, num_heads=4),  # CPU-sized reproduction
    "vit_tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "vit_small": dict(embed_dim=384, depth=12, num_heads=6),
    "vit_base": dict(embed_dim=768, depth=12, num_heads=12),  # the paper's model
}
for _short in ("nano", "mini", "tiny", "small", "base"):
    ENCODER_PRESETS[_short] = ENCODER_PRESETS[f"vit_{_short}"]

# --------------------------------------------------------------------------------------------------------------
# Probe and fine-tune presets: dotted overrides on ProbeConfig() / FinetuneConfig() (docs/method.md §8, §9)
# --------------------------------------------------------------------------------------------------------------

# The offline corpora hold 1-s clips: 128 frames (the Speech Commands input length, docs/method.md §2).
_CORPUS_1S = {"data.clip_seconds": 1.0, "frontend.target_frames": 128}
_SMOKE = {**_CORPUS_1S, "data.recipe": "tiny", "data.task": "kws10", "data.num_workers": 0,
          "runtime.progress": False, "runtime.log_every": 1}
# Single-label KWS probes follow the authors' ESC-50 probe (CE, blr 0.1, batch 32, wd 0).
_PROBE_CE = {"optim.blr": 0.1, "data.batch_size": 32, "optim.weight_decay": 0.0}

PROBE_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {**_SMOKE, **_PROBE_CE, "optim.epochs": 3, "optim.warmup_epochs": 1.0, "extract_batch": 32},
    "cpu": {**_CORPUS_1S, **_PROBE_CE, "data.recipe": "default", "data.task": "kws35", "optim.epochs": 60,
            "data.num_workers": 2},
    "gpu": {**_CORPUS_1S, **_PROBE_CE, "data.recipe": "default", "data.task": "kws35", "optim.epochs": 60,
            "data.num_workers": 8, "extract_batch": 256},
    "paper": {"data.task": "as20k"},  # the defaults: AS-20K linear probe, blr 1e-3, batch 16, 60 (4) epochs
    # Fig. 3: every block, weighted sum and attentive heads; blr 5e-4, batch 64, AdamW's default wd 0.01.
    "paper_layers": {"data.task": "as20k", "all_layers": True, "heads": ("linear", "weighted", "attentive"),
                     "optim.blr": 5e-4, "data.batch_size": 64, "optim.weight_decay": 0.01},
    "paper_esc50": {"data.task": "esc50", **_PROBE_CE, "data.clip_seconds": 5.0, "frontend.target_frames": 512,
                    "frontend.norm_mean": NORM_STATS["esc50"][0], "frontend.norm_std": NORM_STATS["esc50"][1]},
}

# KWS fine-tunes follow the authors' SPC-2 recipe (blr 1e-3, layer decay 0.75, SpecAugment 48/48).
_FT_SPC = {**_CORPUS_1S, "optim.blr": 1e-3, "optim.layer_decay": 0.75, "freqm": 48, "timem": 48,
           "spec_noise": True}

_ENVSDD = {"data.clip_seconds": 64600 / 16000, "frontend.target_frames": 1024, "data.batch_size": 128,
           "optim.epochs": 20, "optim.warmup_epochs": 1.0, "optim.blr": 1e-3, "optim.layer_decay": 0.75,
           "optim.weight_decay": 0.01, "encoder.drop_path_rate": 0.1, "freqm": 48, "timem": 192, "mixup": 0.0,
           "mask_t_prob": 0.0, "mask_f_prob": 0.0, "roll_mag": False, "loss": "ce", "class_weights": (0.1, 0.9),
           "eer": True, "dev_manifest": "dev", "test_sets": ("test01", "test02", "test03", "test04"),
           "data.recipe": "spoof", "data.task": "ata"}  # without data.manifest: the offline corpus' track

FINETUNE_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {**_SMOKE, **_FT_SPC, "freqm": 16, "timem": 16, "data.batch_size": 16, "optim.epochs": 2,
              "optim.warmup_epochs": 0.5, "mixup": 0.5},
    "cpu": {**_FT_SPC, "data.recipe": "default", "data.task": "kws35", "data.batch_size": 32, "optim.epochs": 20,
            "optim.warmup_epochs": 2.0},
    "gpu": {**_FT_SPC, "data.recipe": "default", "data.task": "kws35", "data.batch_size": 64, "optim.epochs": 100,
            "optim.warmup_epochs": 5.0, "data.num_workers": 8},
    # The reproduction's fine-tune (repro --suite finetune): inst11, 10 epochs. The SPC recipe above is tuned for
    # ViT-B over 200 epochs; at ViT-nano scale its lr (blr 1e-3) and augmentation left kws35 and inst11 at chance-
    # level train loss after 10-20 epochs (measured), while blr 3e-2 without mixup learns (inst11 0.45 vs 0.40
    # from scratch).
    "repro_cpu": {**_CORPUS_1S, "data.recipe": "default", "data.task": "inst11", "data.batch_size": 32,
                  "optim.epochs": 10, "optim.warmup_epochs": 1.0, "optim.blr": 3e-2, "optim.layer_decay": 0.75,
                  "mixup": 0.0, "freqm": 24, "timem": 24},
    "paper": {"data.task": "as20k"},  # the defaults: AS-20K, 60 (4) epochs, blr 5e-4, layer decay 0.65
    "paper_spc2": {**_FT_SPC, "data.task": "spc2", "data.batch_size": 64, "optim.epochs": 200,
                   "optim.warmup_epochs": 5.0, "frontend.norm_mean": NORM_STATS["spc"][0],
                   "frontend.norm_std": NORM_STATS["spc"][1]},
    "paper_esc50": {"data.task": "esc50", "data.clip_seconds": 5.0, "frontend.target_frames": 512,
                    "frontend.norm_mean": NORM_STATS["esc50"][0], "frontend.norm_std": NORM_STATS["esc50"][1],
                    "data.batch_size": 16, "optim.warmup_epochs": 5.0, "optim.layer_decay": 0.75, "mixup": 0.0,
                    "freqm": 24, "timem": 96, "folds": (1, 2, 3, 4, 5)},
    # EnvSDD spoof detection, the authors' recipe (docs/method.md §8): 20 (1) epochs, blr 1e-3, batch 128, layer
    # decay 0.75, wd 0.01, drop path 0.1, SpecAugment 48/192, no mixup, no token masking, no roll-mag, CE with class
    # weights [0.1, 0.9] (0 spoof, 1 bona fide), 64,600-sample (4.04-s) clips at 16 kHz padded to 1024 frames.
    # Point data.manifest at <EnvSDD>/<track>/train.json (README "Spoof detection"); dev and test01-04 are read from
    # the same folder. Selection: the last epoch and the best DEV epoch (the authors pick the best test01 epoch).
    "envsdd": _ENVSDD,
    "envsdd_aasist": {**_ENVSDD, "head": "aasist"},
    # The offline spoof corpus (data build --recipe spoof; track ata, or data.task=tta): 1-s clips (128 frames), a
    # nano-ViT-sized schedule (30 steps of 32 per epoch, 4 epochs); timem scaled from 192/1024 frames to 24/128.
    # blr 1e-2: the repro_cpu finding that blr 1e-3 barely moves a nano ViT in a short schedule. Nano ViT on one core
    # of the shared 2-core box (measured): linear 0.2 s/step, ~2 min per run with the evaluation of dev + test01-04;
    # the AASIST head costs ~10x the nano encoder (1.9 s/step), 7-18 min per run depending on the load.
    "spoof_cpu": {**_ENVSDD, **_CORPUS_1S, "data.batch_size": 32,
                  "data.num_workers": 1, "optim.epochs": 4, "optim.blr": 1e-2, "timem": 24,
                  "runtime.progress": False},
}

# --------------------------------------------------------------------------------------------------------------
# Pre-training presets: dotted overrides on PretrainConfig() (``python -m audiomosaic pretrain --preset NAME``)
# --------------------------------------------------------------------------------------------------------------


def _encoder_keys(name: str, **overrides: Any) -> dict[str, Any]:
    """An encoder preset as dotted ``encoder.*`` overrides."""
    return {f"encoder.{k}": v for k, v in {**ENCODER_PRESETS[name], **overrides}.items()}


# The offline corpora hold 1-2 s clips: pre-train on 1-s crops -> 98 frames padded to 128 (docs/method.md §2, as for
# Speech Commands), i.e. an 8 x 8 patch grid; tf masking then keeps 3 of 8 columns and 4 of 8 rows.
_PRETRAIN_1S = {"data.clip_seconds": 1.0, "frontend.target_frames": 128}
# The paper's model and input (docs/method.md §4, §7): ViT-B on 1024 x 128, 512 clips per GPU, bf16, compiled, the first
# 70% of blocks checkpointed.
_PRETRAIN_VIT_B = {**_encoder_keys("vit_base", spec_size=(1024, 128), grad_ckpt_fraction=0.7),
                   "frontend.target_frames": 1024, "data.clip_seconds": 10.0, "data.batch_size": 512,
                   "runtime.precision": "bf16", "runtime.compile": True, "runtime.ckpt_every": 1000}

TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    # Tests/CI: a few steps of a nano ViT on the tiny corpus (< 2 min on 2 CPU cores, most of it start-up);
    # deterministic: bitwise-repeatable runs (one CPU thread, see utils.backend_settings), which tests compare.
    "smoke": {**_PRETRAIN_1S, **_encoder_keys("vit_nano", spec_size=(128, 128), projector_hidden=128,
                                              projector_out=32),
              "data.recipe": "tiny", "data.batch_size": 16, "data.num_workers": 1, "optim.lr": 1e-3,
              "optim.epochs": 1, "optim.warmup_epochs": 0.2, "max_steps": 8, "runtime.log_every": 2,
              "runtime.ckpt_every": 4, "runtime.progress": False, "runtime.deterministic": True},
    # The main job on 2 CPU cores: ViT-mini on the default corpus' pre-training pool (~7k clips), sized so that
    # pre-training plus the linear probes fit in 15 minutes. A larger lr than the paper's: 128 clips per step.
    # deterministic = one compute thread (the loader decodes on the other core): reproducible numbers, and on a
    # shared machine two OpenMP threads ran 4x slower than one (measured), so this is also the robust choice.
    "cpu": {**_PRETRAIN_1S, **_encoder_keys("vit_mini", spec_size=(128, 128)), "data.recipe": "default",
            "data.batch_size": 128, "data.num_workers": 1, "optim.lr": 1e-3, "optim.epochs": 6,
            "optim.warmup_epochs": 0.5, "runtime.log_every": 10, "runtime.ckpt_every": 50,
            "runtime.deterministic": True},
    # One GPU machine: the paper's model and input on the scale-up corpus, a short schedule.
    "gpu": {**_PRETRAIN_VIT_B, "data.recipe": "large", "data.num_workers": 12, "optim.epochs": 20,
            "runtime.log_every": 50},
    # The authors' full recipe (docs/method.md §7): 400 epochs, lr 6e-4 (not batch-scaled), cosine to 1e-6, 1 warmup epoch,
    # wd 0.05, drop path 0.1, seed 42 (the PretrainConfig defaults), 512 clips per GPU. Point data.manifest at an
    # AudioSet-2M manifest in the authors' JSON layout.
    "paper": {**_PRETRAIN_VIT_B, "data.num_workers": 12, "runtime.log_every": 50},
    # Reproduction suites (audiomosaic.repro.suites) on a shared 2-core CPU: two epochs of the default corpus' pool
    # (6.9k clips, 2 x 108 steps of 64) on a nano ViT, ~3 min per run, so 12 pre-trainings + probes fit an hour.
    "repro_cpu": {**_PRETRAIN_1S, **_encoder_keys("vit_nano", spec_size=(128, 128), projector_hidden=256,
                                                  projector_out=64),
                  "data.recipe": "default", "data.batch_size": 64, "data.num_workers": 1, "optim.lr": 1e-3,
                  "optim.epochs": 2, "optim.warmup_epochs": 0.2, "runtime.log_every": 10,
                  "runtime.ckpt_every": 50, "runtime.progress": False},
    # The same suites on one GPU: ViT-B on 1024 x 128 of the scale-up corpus, a short schedule per condition.
    "repro_gpu": {**_PRETRAIN_VIT_B, "data.recipe": "large", "data.onthefly": ("all",), "data.num_workers": 12,
                  "optim.epochs": 10, "runtime.log_every": 50, "runtime.progress": False},
    # The reproduction that can decide (issue #11): long enough for the objective to be learned on 2 CPU cores.
    # 0.96-s windows (96 frames -> an unpadded 6 x 8 grid) cut at random from whole files, nano ViT, batch 64,
    # 36 epochs (~3,900 steps): the pre-registered pilot rule doubled the first 18 (paper_figures/README.md).
    "repro_cpu_long": {**_encoder_keys("vit_nano", spec_size=(96, 128), projector_hidden=256, projector_out=64),
                       "frontend.target_frames": 96, "data.clip_seconds": 0.975, "data.random_crop": True,
                       "data.recipe": "default", "data.batch_size": 64, "data.num_workers": 1, "optim.lr": 1e-3,
                       "optim.epochs": 36, "optim.warmup_epochs": 1.0, "runtime.log_every": 20,
                       "runtime.ckpt_every": 200, "runtime.keep_ckpts": 1, "runtime.progress": False},
    # AudioMAE's published pre-training recipe (ViT-B, 1024 x 128, mask 0.8, normalised-patch MSE, decoder 512 wide
    # with 16 heads; AudioMAE's released decoder is 16 local-attention blocks, ours 8 global ones), blr 2e-4 at
    # batch 512 (lr 4e-4), AdamW betas (0.9, 0.95), wd 0.05, 32 epochs with 3 warm-up, no waveform augmentation.
    "mae_vit_base": {**_PRETRAIN_VIT_B, "objective": "mae", "mae.mask_ratio": 0.8, "mae.decoder_dim": 512,
                     "mae.decoder_depth": 8, "mae.decoder_heads": 16, "mae.norm_pix_loss": True,
                     "augment.preset": "none", "optim.lr": 4e-4, "optim.betas": (0.9, 0.95),
                     "optim.weight_decay": 0.05, "optim.epochs": 32, "optim.warmup_epochs": 3.0,
                     "data.num_workers": 12, "runtime.log_every": 50},
}

# The run-preset tables by kind (what a notebook parameter file's `preset` is checked against, lab/runner.py).
REGISTRIES: dict[str, dict[str, dict[str, Any]]] = {"train": TRAIN_PRESETS, "probe": PROBE_PRESETS,
                                                   "finetune": FINETUNE_PRESETS}


# --------------------------------------------------------------------------------------------------------------
# Audio-language adapter (audiomosaic.alm; docs/method.md §12): dotted overrides on audiomosaic.alm.config.AlmConfig
# --------------------------------------------------------------------------------------------------------------

# The four stages of configs/AudioMosaic/stage{1..4}_*.yaml. Stage 1 names a "dummy" LoRA target, i.e. no LoRA;
# audiomosaic.alm attaches LoRA in every stage but freezes it in stage 1, where its zero-initialised B makes it the
# identity, so the two are the same function.
ALM_PRESETS: dict[str, dict[str, Any]] = {
    "stage1": {"stage.name": "stage1", "stage.trainable": "proj+norm", "stage.data": "cla", "stage.lr": 1e-3,
               "stage.epochs": 2},
    "stage2": {"stage.name": "stage2", "stage.trainable": "all", "stage.data": "cla", "stage.lr": 1e-4,
               "stage.epochs": 2},
    "stage3": {"stage.name": "stage3", "stage.trainable": "all", "stage.data": "closed", "stage.lr": 1e-4,
               "stage.epochs": 1},
    "stage4": {"stage.name": "stage4", "stage.trainable": "all", "stage.data": "mix", "stage.lr": 1e-4,
               "stage.epochs": 1},
}
ALM_STAGES = tuple(ALM_PRESETS)

# The offline demonstration (audiomosaic.alm.demo.DemoConfig): `cpu` is the committed run (its defaults);
# `smoke` takes seconds on the tiny corpus, one seed, two steps per stage (it checks that it runs, not what it learns).
ALM_DEMO_PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {},
    "gpu": {},  # CPU-sized: the same run (the notebooks' $AUDIOMOSAIC_PRESET=gpu switch lands here)
    "smoke": {"recipe": "tiny", "conditions": ("random_init", "no_audio"), "seeds": (0,), "train_per_task": 16,
              "test_per_task": 4, "lm_width": 32, "lm_epochs": 1, "batch_size": 8, "warmup_steps": 1,
              "max_steps": 2, "max_new_tokens": 6},
}
