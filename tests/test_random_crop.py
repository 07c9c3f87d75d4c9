"""data.random_crop: pre-training windows cut at random offsets of whole files, on the device, from the run's
checkpointed generator."""
from __future__ import annotations

from pathlib import Path

import torch

from audiomosaic.config import resolve
from audiomosaic.train.pretrain import pretrain, random_window
from audiomosaic.train.runlog import WALL_CLOCK_KEYS, read_metrics


def test_random_window_slices_inside_each_clip() -> None:
    lengths = torch.tensor([10, 25, 40, 7])
    wav = torch.zeros(4, 40)
    for i, n in enumerate(lengths):
        wav[i, :n] = torch.arange(1, n + 1, dtype=torch.float32)  # sample value = position + 1
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(50):
        out, new_len = random_window(wav, lengths, 10, g)
        assert out.shape == (4, 10) and new_len.tolist() == [10, 10, 10, 7]
        for i, n in enumerate(lengths.tolist()):
            start = int(out[i, 0]) - 1
            expect = torch.arange(start + 1, start + 11, dtype=torch.float32).clamp(max=n) * (
                torch.arange(start, start + 10) < n)
            assert out[i].equal(expect), (i, out[i])
            assert 0 <= start <= max(n - 10, 0)
            if i == 2:
                seen.add(start)
    assert len(seen) > 10  # offsets really vary over the 31 possible starts
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert random_window(wav, lengths, 10, g1)[0].equal(random_window(wav, lengths, 10, g2)[0])


def test_random_window_pads_when_every_file_is_short() -> None:
    out, n = random_window(torch.ones(2, 5), torch.tensor([5, 3]), 8, torch.Generator().manual_seed(0))
    assert out.shape == (2, 8) and n.tolist() == [5, 3] and out.sum() == 8


def test_random_crop_run_resumes_exactly(tiny_corpus: Path, tmp_path: Path) -> None:
    over = {"data.root": str(tiny_corpus), "data.random_crop": True, "data.clip_seconds": 0.5, "max_steps": 4,
            "runtime.export_every": 2,
            "runtime.ckpt_every": 2, "runtime.log_every": 1, "runtime.keep_ckpts": 3}
    full, part = tmp_path / "full", tmp_path / "part"
    pretrain(resolve("smoke", over), full)
    assert sorted(p.name for p in full.glob("encoder-step*.safetensors")) == [
        "encoder-step000002.safetensors", "encoder-step000004.safetensors"]
    (part / "checkpoints").mkdir(parents=True)
    ck = sorted((full / "checkpoints").glob("step-*2.pt"))[0]
    (part / "checkpoints" / ck.name).write_bytes(ck.read_bytes())
    pretrain(resolve("smoke", over), part, resume=True)
    rec = lambda run: [{k: v for k, v in r.items() if k not in WALL_CLOCK_KEYS}  # noqa: E731
                       for r in read_metrics(run / "metrics.jsonl")]
    assert rec(part) == [r for r in rec(full) if r["step"] > 2] and len(rec(part)) == 2
