"""The GPU preset's code paths on CPU, so that compile / autocast / checkpointing / sync bugs show up in CI:

- a tiny ``gpu``-preset run (``runtime.compile=True``, bf16 autocast, the preset's gradient-checkpointing fraction
  and policy, tf masking so that the compiled encoder sees two token counts), then a resume of it;
- the augmentation's sync-free (CUDA) formulation, run on CPU: it must equal the CPU path;
- the pre-training loader's workers compute with one thread (bench/NOTES.md, "Threads").
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from audiomosaic.config import TRAIN_PRESETS, resolve

# The gpu preset, shrunk: 2 blocks of width 64 on a 96 x 128 input (6 x 8 patches: tf masking keeps 2 time columns
# = 16 tokens in view A and 4 frequency rows = 24 tokens in view B), 1-s clips of the tiny corpus, 8 clips a step.
TINY_GPU = {"encoder.depth": 2, "encoder.embed_dim": 64, "encoder.num_heads": 2, "encoder.spec_size": (96, 128),
            "encoder.projector_hidden": 64, "encoder.projector_out": 16, "frontend.target_frames": 96,
            "data.recipe": "tiny", "data.clip_seconds": 1.0, "data.batch_size": 8, "data.num_workers": 0,
            "optim.epochs": 1, "optim.warmup_epochs": 0.0, "max_steps": 2, "runtime.log_every": 1,
            "runtime.ckpt_every": 1, "runtime.progress": False, "runtime.device": "cpu"}


def _compiler_available() -> bool:
    return shutil.which("g++") is not None or shutil.which("c++") is not None or shutil.which("clang++") is not None


# slow: inductor compiles forward and backward for both token counts; on the 2-core CI VM under load that took
# 253 s with an empty inductor cache and 55-96 s with a warm one (TORCHINDUCTOR_CACHE_DIR); the resume reuses the
# compiled graphs (about 1 s). `make test` runs it, `make test-fast` does not.
@pytest.mark.slow
def test_tiny_gpu_preset_compiled_bf16_checkpointed_run_and_resume(tiny_corpus: Path, tmp_path: Path,
                                                                  one_thread_module: None) -> None:
    from audiomosaic.train.pretrain import pretrain

    preset = TRAIN_PRESETS["gpu"]
    assert preset["runtime.compile"] is True and preset["runtime.precision"] == "bf16"
    if not _compiler_available():  # inductor's CPU backend needs a C++ compiler
        pytest.skip("no C++ compiler: torch.compile's inductor CPU backend cannot build kernels")
    cfg = resolve("gpu", {**TINY_GPU, "data.root": str(tiny_corpus)})
    assert cfg.runtime.compile and cfg.runtime.precision == "bf16"
    assert cfg.encoder.grad_ckpt_fraction == 0.7 and cfg.encoder.grad_ckpt_policy == "block"  # 1 of the 2 blocks
    assert cfg.mask.mode == "tf"  # two different visible-token counts through one compiled encoder
    torch._dynamo.reset()
    run = tmp_path / "run"
    pretrain(cfg, run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(torch.isfinite(torch.tensor(float(r["loss"]))) for r in rows), rows
    # resume: two more steps from the step-2 checkpoint, through the same compiled code paths
    more = resolve("gpu", {**TINY_GPU, "data.root": str(tiny_corpus), "max_steps": 4})
    pretrain(more, run, resume=True)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(float(r["loss"]))) for r in rows), rows
    assert (run / "encoder.safetensors").exists()


def test_sync_free_augmentation_matches_the_cpu_path() -> None:
    """The CUDA formulation (no ``nonzero``/``.item()``: every row computed, non-firing rows restored by
    ``torch.where``; the vocoder's cumulative product over all frames) equals the CPU path on CPU."""
    from audiomosaic.augment import filters
    from audiomosaic.augment.chain import apply_chain, sample_params
    from audiomosaic.augment.vocoder import phase_vocoder, stft
    from audiomosaic.config import AugmentConfig

    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 8000, generator=g)
    spec = stft(x)
    rate = torch.tensor([0.7, 0.85, 1.0, 1.1, 1.3, 0.93])
    a, na = phase_vocoder(spec, rate, 20)
    b, nb = phase_vocoder(spec, rate, 20, sync_free=True)
    assert torch.equal(na, nb) and (a - b).abs().max() < 1e-4 * a.abs().max()
    p = {k: v if v.ndim == 0 else v[0] for k, v in sample_params(AugmentConfig(), 6, g).items()}
    p["time_stretch_fires"] = torch.tensor([True, False, True, True, False, True])
    p["pitch_fires"] = torch.tensor([False, True, True, False, True, True])
    p["noise_fires"] = torch.ones(6, dtype=torch.bool)  # the same draws only when both paths draw every row
    cpu = apply_chain(x, p, 16000, max_semitones=4.0)
    try:
        filters.SYNC_FREE = True
        free = apply_chain(x, p, 16000, max_semitones=4.0)
    finally:
        filters.SYNC_FREE = False
    # float rounding only, largest at a stretched clip's end where the window power is small (as in
    # tests/test_augment.py's chain test); a wrong row selection or frame count would differ by O(signal)
    assert (cpu - free).abs().max() < 1e-3 * cpu.abs().max()


class _Threads(torch.utils.data.Dataset):
    """Clips whose samples are the intra-op thread count of the process that loaded them."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict:
        return {"wav": torch.full((4,), float(torch.get_num_threads())), "length": 4, "target": torch.zeros(1),
                "index": i}


def test_pretraining_loader_workers_compute_with_one_thread() -> None:
    """The pre-training loader's workers run one intra-op thread each, whatever the parent process has (PyTorch's
    worker loop sets it; the CPU augmentation is per-core bound and a second OpenMP thread per process collapses
    throughput on a shared machine: bench/NOTES.md, "Threads"). A real loader from ``make_loader``, two workers."""
    from audiomosaic.config import DataConfig
    from audiomosaic.train.dist import DistInfo
    from audiomosaic.train.pretrain import make_loader

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        loader = make_loader(_Threads(), DataConfig(batch_size=2, num_workers=2), 0, DistInfo(), torch.device("cpu"))
        seen = torch.cat([batch["wav"].flatten() for batch in loader])
    finally:
        torch.set_num_threads(before)
    assert seen.numel() == 32 and torch.all(seen == 1.0), seen
