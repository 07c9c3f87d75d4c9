"""Run-time plumbing shared by the training engines: seeding, device and precision, the allocator, the data order.

Nothing here holds state between calls (``keep_freed_memory`` sets a process-wide allocator option once); seeds
come only from the config (docs/style.md 15).
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import platform
import random
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


SEED_STRIDE = 1_000_003  # a prime larger than any key combination a run produces
KEY_BASE = 101  # keys after the first are combined in base 101 (step * 101 + rank)


def derive_seed(seed: int, *keys: int) -> int:
    """A stream's seed from the run seed and integer keys: ``seed * 1_000_003`` plus the keys in base 101.

    ``derive_seed(s, k) = s * 1_000_003 + k`` and ``derive_seed(s, step, rank) = s * 1_000_003 + step * 101 + rank``:
    the formulas the engines have always used, so committed results and resume checkpoints keep their streams.
    """
    combined = 0
    for k in keys:
        combined = combined * KEY_BASE + int(k)
    return int(seed) * SEED_STRIDE + combined


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> this process' CUDA device when there is one, else CPU; ``cuda`` -> ``cuda:<local_rank>``.

    Raises:
        ValueError: CUDA asked for but unavailable, or an unknown device name.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"runtime.device={name!r} but CUDA is not available; use cpu or auto")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown runtime.device {name!r}; allowed: auto, cpu, cuda, cuda:N")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The autocast dtype: ``auto`` -> bf16 on CUDA, fp32 (no autocast) on CPU (docs/method.md §7: ``amp`` means bf16)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if precision not in _DTYPES:
        raise ValueError(f"unknown runtime.precision {precision!r}; allowed: auto, {', '.join(_DTYPES)}")
    return _DTYPES[precision]


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """The one mixed-precision context of a step; a no-op for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype) -> torch.amp.GradScaler:
    """A GradScaler that is enabled only for fp16 (bf16 has fp32's range and needs none)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Let glibc keep freed buffers of up to 32 MiB for reuse instead of returning them to the OS. Idempotent;
    False (and nothing done) without glibc.

    Why: glibc serves a multi-MB request by mmap and unmaps it on free, so every fresh tensor of the CPU
    augmentation (dozens of 2-3 MB buffers per 10-s clip) is page-faulted again on first touch. On the project's
    2-core VM that made the phase vocoder 1.3-3x slower (bench/NOTES.md, "Allocator"). This is the runtime
    equivalent of ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=...:glibc.malloc.trim_threshold=...``: a process
    keeps its peak heap, which a training or data process reaches in its first steps anyway. Larger requests
    (datasets, models) are still mmapped and returned.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


@contextlib.contextmanager
def backend_settings(device: torch.device, deterministic: bool = False) -> Iterator[None]:
    """Within the block: TF32 matmuls on CUDA (unless deterministic), or run-to-run identical results.

    ``deterministic`` means deterministic kernels (CUDA also needs ``CUBLAS_WORKSPACE_CONFIG``) and, on CPU, ONE
    thread: with two, MKL made last-bit differences between identical processes on the project's 2-core AMD machine
    (MKL's reproducibility modes cover Intel CPUs only), and ``MKL_NUM_THREADS`` cannot change once torch is
    loaded. The previous settings come back on exit, so a notebook or test process is left as it was.
    """
    if device.type == "cpu":
        keep_freed_memory()  # process-wide and not undone on exit: it changes speed only, never results
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    if device.type == "cuda" and not deterministic:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        if device.type == "cpu":
            torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1])
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[2], saved[3]


# ------------------------------------------------------------------------------------------------ data order

class ResumableBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches whose order is a pure function of (seed, epoch); ``set_epoch(epoch, start)`` skips ``start``
    batches so that a resumed run sees exactly the clips the uninterrupted run would have. Subclasses define
    ``batches_per_epoch`` and ``__iter__`` (drawing from :meth:`epoch_generator`)."""

    seed: int
    epoch: int = 0
    start: int = 0

    @property
    def batches_per_epoch(self) -> int:
        raise NotImplementedError

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's order and skip its first ``start`` batches (resume)."""
        self.epoch, self.start = epoch, start

    def epoch_generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))

    def __len__(self) -> int:
        return max(self.batches_per_epoch - self.start, 0)


class EpochBatchSampler(ResumableBatchSampler):
    """Per-epoch seeded permutation, cut into global batches of ``batch_size * world_size``; each rank takes its
    ``batch_size`` slice of every global batch (DistributedSampler's role, with drop_last).

    The order is a pure function of (seed, epoch), so a resumed run restarts at ``start`` batches into the epoch
    and sees exactly the clips the uninterrupted run would have. The tail that does not fill a global batch is
    dropped: NT-Xent needs the same number of clips on every rank (the all-gather) and static shapes.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if num_items < batch_size * world_size:
            raise ValueError(f"{num_items} clips cannot fill one global batch of {batch_size} x {world_size} "
                             "ranks; lower data.batch_size")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.num_items // (self.batch_size * self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        perm = torch.randperm(self.num_items, generator=self.epoch_generator()).tolist()
        gb = self.batch_size * self.world_size
        for b in range(self.start, self.batches_per_epoch):
            lo = b * gb + self.rank * self.batch_size
            yield perm[lo:lo + self.batch_size]


# ------------------------------------------------------------------------------------- synchronised BatchNorm

class CpuSyncBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics span every rank, for gloo/CPU runs.

    ``nn.SyncBatchNorm`` only runs on GPUs. This computes the global mean and (biased) variance with two
    differentiable all-reduces, so the forward and the gradients equal BatchNorm over the combined batch
    (the all-reduce's backward sums every rank's gradient, DDP then averages). Same state-dict keys as BatchNorm1d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        count = x.shape[0] * dist.get_world_size()  # every rank holds the same number of rows (drop_last)
        mean = all_reduce(x.sum(0)) / count  # (C,)
        var = all_reduce(((x - mean) ** 2).sum(0)) / count  # two-pass: as accurate as the local BatchNorm
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * count / max(count - 1, 1), m)
        y = (x - mean) * torch.rsqrt(var + self.eps)
        return y * self.weight + self.bias if self.affine else y


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Make every BatchNorm synchronise across ranks: ``nn.SyncBatchNorm`` on CUDA, CpuSyncBatchNorm1d on CPU."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm1d:
            new = CpuSyncBatchNorm1d(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats).to(child.weight.device)
            new.load_state_dict(child.state_dict())
            if child.affine:  # keep frozen parameters frozen (the projector's last BN bias, docs/method.md §4)
                new.weight.requires_grad_(child.weight.requires_grad)
                new.bias.requires_grad_(child.bias.requires_grad)
            setattr(model, name, new)
        else:
            convert_sync_batchnorm(child, device)
    return model
