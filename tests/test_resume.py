"""Resume: a run SIGKILLed at an arbitrary moment and resumed writes the same metrics.jsonl as an uninterrupted run,
bitwise on CPU (wall-clock fields aside), and a truncated newest checkpoint falls back to the previous one."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from audiomosaic.train.checkpoint import list_resume
from audiomosaic.train.runlog import WALL_CLOCK_KEYS, capture_rng, read_metrics, restore_rng

# 10 steps per epoch (329 clips, batch 32), 14 steps: the run crosses an epoch boundary; checkpoints at 4, 8, 12, 14
# and log lines at 3, 6, 9, 12, 14 are deliberately out of phase.
OVERRIDES = ["data.batch_size=32", "optim.epochs=2", "max_steps=14", "runtime.ckpt_every=4", "runtime.log_every=3",
             "runtime.keep_ckpts=2", "data.num_workers=1"]


def start(run_dir: Path, corpus: Path, *flags: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "audiomosaic", "pretrain", "--preset", "smoke", "--run-dir", str(run_dir),
           "--no-progress", *flags, f"data.root={corpus}", *OVERRIDES]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> tuple[str, str]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return out, err


def kill_after(proc: subprocess.Popen, path: Path, delay: float) -> None:
    """SIGKILL ``proc`` ``delay`` seconds after ``path`` appears (mid-step, mid-log or mid-save: any moment)."""
    deadline = time.monotonic() + 240
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"


def comparable(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK_KEYS} for r in read_metrics(run_dir / "metrics.jsonl")]


@pytest.fixture(scope="module")
def reference(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    run = tmp_path_factory.mktemp("uninterrupted")
    finish(start(run, tiny_corpus))
    records = comparable(run)
    assert [r["step"] for r in records] == [3, 6, 9, 12, 14] and {r["epoch"] for r in records} == {0, 1}
    finish(start(run, tiny_corpus, "--resume"))  # resuming a finished run changes nothing
    assert comparable(run) == records
    return records


def test_sigkill_then_resume_is_bitwise_identical(tiny_corpus: Path, tmp_path: Path, reference: list[dict]) -> None:
    run = tmp_path / "killed"
    kill_after(start(run, tiny_corpus), run / "checkpoints" / "step-00000004.pt", delay=0.4)
    steps_before = [r["step"] for r in read_metrics(run / "metrics.jsonl")]
    assert steps_before and steps_before[-1] < 14
    out, _ = finish(start(run, tiny_corpus, "--resume"))
    assert "resumed" in out and "step-00000004.pt" in out
    assert comparable(run) == reference


def test_truncated_newest_checkpoint_falls_back(tiny_corpus: Path, tmp_path: Path, reference: list[dict]) -> None:
    run = tmp_path / "truncated"
    kill_after(start(run, tiny_corpus), run / "checkpoints" / "step-00000008.pt", delay=0.0)
    newest = list_resume(run)[-1]
    assert newest.name == "step-00000008.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    out, err = finish(start(run, tiny_corpus, "--resume"))
    assert "step-00000004.pt" in out and "step-00000008.pt is unreadable" in err and "falling back" in err
    assert comparable(run) == reference


def test_fresh_start_refuses_a_run_dir_with_checkpoints(tiny_corpus: Path, tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    torch.save({"step": 1}, tmp_path / "checkpoints" / "step-00000001.pt")
    proc = start(tmp_path, tiny_corpus)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "--resume" in err and "Traceback" not in err


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    import random

    import numpy as np

    g = torch.Generator().manual_seed(3)
    torch.save(capture_rng({"augment": g}), tmp_path / "rng.pt")
    def draw() -> tuple[float, ...]:
        return random.random(), float(np.random.rand()), torch.rand(1).item(), torch.rand(1, generator=g).item()

    expected = draw()
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True), {"augment": g})
    assert draw() == expected
    with pytest.raises(ValueError, match="no generator 'mask'"):
        restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True), {"mask": g})
