"""Input-pipeline benchmark: two-view augmentation + fbank throughput (views/s) on 10-s clips.

Prints one JSON line per configuration:

- ``batched``: :func:`audiomosaic.augment.chain.two_view_fbank` on a (B, 160000) batch (both views, full chain,
  fbank to 1024 frames), on CPU with 1 thread (per-core figure) and with all threads, and on CUDA when present;
- ``per_clip``: the clip-by-clip path for comparison: each view of each clip through the same operations as a
  batch of one, then ``audiomosaic.frontend.fbank`` (the authors' torchaudio Kaldi call).

Usage::

    python bench/pipeline.py            # CPU (1 thread and all threads) + GPU if present
    python bench/pipeline.py --quick    # a few seconds, for CI
    python bench/pipeline.py --malloc keep   # with the allocator setting the engine uses on CPU (see NOTES.md)
    # the per-core figure of the issue (#14), on a quiet machine: 5 interleaved rounds, medians
    python bench/pipeline.py --no-gpu --threads 1,2 --cpu-batches 8 --vocoders 2048/512 --iters 5 --rounds 5 \
        --malloc keep --no-per-clip

Each line also carries ``load1``, the 1-minute load average when it was measured: the CPU figures are only
comparable between runs at similar load (bench/NOTES.md).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import torch

from audiomosaic.augment.chain import TwoViewAugment, two_view_fbank
from audiomosaic.config import AugmentConfig, FrontendConfig
from audiomosaic.frontend import fbank
from audiomosaic.train.runtime import keep_freed_memory

MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def synthetic_clips(batch: int, samples: int, device: str, seed: int = 0) -> torch.Tensor:
    """Tones + noise: the cost does not depend on the content, only on the shapes."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / 16000
    f0 = 100 + 3000 * torch.rand(batch, 1, generator=g)
    wav = 0.3 * torch.sin(2 * torch.pi * f0 * t) + 0.05 * torch.randn(batch, samples, generator=g)
    return wav.to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_batched(batch: int, device: str, iters: int, warmup: int, samples: int, cfg_fe: FrontendConfig,
                 cfg: AugmentConfig) -> tuple[float, float]:
    """(wall, process CPU) seconds per call of two_view_fbank on a (batch, samples) batch.

    CPU: the fastest of ``iters`` calls; CUDA: the mean over ``iters`` calls between CUDA events.
    """
    wav = synthetic_clips(batch, samples, device)
    gen = torch.Generator(device=device).manual_seed(0)
    for _ in range(warmup):
        two_view_fbank(wav, cfg, cfg_fe, gen)
    _sync(device)
    if device.startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            two_view_fbank(wav, cfg, cfg_fe, gen)
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000 / iters, float("nan")
    walls, cpus = [], []
    for _ in range(iters):  # the fastest iteration: the least disturbed by other processes on a shared machine
        t0, c0 = time.perf_counter(), time.process_time()
        two_view_fbank(wav, cfg, cfg_fe, gen)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)


def time_per_clip(clips: int, samples: int, cfg_fe: FrontendConfig, cfg: AugmentConfig) -> tuple[float, float]:
    """(wall, process CPU) seconds for ``clips`` clips processed one at a time (2 views each), CPU."""
    wav = synthetic_clips(clips, samples, "cpu")
    aug, gen = TwoViewAugment(cfg, cfg_fe.sample_rate), torch.Generator().manual_seed(0)
    aug(wav[:1], gen)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(clips):
        for view in aug(wav[i:i + 1], gen):
            fbank(view[0], cfg_fe.sample_rate, cfg_fe)
    return time.perf_counter() - t0, time.process_time() - c0


def record(path: str, device: str, threads: int, batch: int, seconds: tuple[float, float], samples: int,
           cfg: AugmentConfig, malloc: str, rounds: int = 1) -> dict:
    """Print one JSON line (``malloc``: the allocator setting in effect). ``cpu_ms_per_batch`` /
    ``views_per_cpu_s`` use this process's CPU time: with one thread on a shared machine they are the figures that
    other processes' load inflates least."""
    views, (wall, cpu) = 2 * batch, seconds
    name = torch.cuda.get_device_name() if device.startswith("cuda") else cpu_name()
    row = dict(path=path, device=device, device_name=name, threads=threads, batch=batch, views_per_batch=views,
               views_per_s=round(views / wall, 1), ms_per_batch=round(wall * 1e3, 2),
               cpu_ms_per_batch=None if cpu != cpu else round(cpu * 1e3, 2),
               views_per_cpu_s=None if cpu != cpu else round(views / cpu, 1), clip_samples=samples,
               preset=cfg.preset, vocoder=f"{cfg.vocoder_n_fft}/{cfg.vocoder_hop}",
               torch=torch.__version__, malloc=malloc, rounds=rounds, load1=round(os.getloadavg()[0], 2),
               date=datetime.date.today().isoformat())
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny CPU run (1-s clips, seconds), for CI")
    ap.add_argument("--cpu-batches", default="4,16", help="comma-separated CPU batch sizes (clips)")
    ap.add_argument("--gpu-batches", default="64,256,512", help="comma-separated GPU batch sizes (clips)")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1,
                    help="CPU: repeat every configuration this many times, interleaved, and report the median of "
                         "the rounds (each round: the fastest of --iters calls)")
    ap.add_argument("--no-per-clip", action="store_true", help="skip the clip-by-clip comparison path")
    ap.add_argument("--vocoders", default="2048/512,2048/1024",
                    help="comma-separated n_fft/hop of the phase vocoder (AugmentConfig.vocoder_*)")
    ap.add_argument("--threads", default="", help="comma-separated CPU thread counts (default: 1 and all)")
    ap.add_argument("--no-gpu", action="store_true")
    ap.add_argument("--malloc", choices=("default", "keep", "tunables"), default="default",
                    help="default: glibc as started; keep: audiomosaic.train.runtime.keep_freed_memory() (what the engine "
                         "does on CPU); tunables: re-exec under GLIBC_TUNABLES (the same, set at start)")
    ap.add_argument("--tune-malloc", action="store_true", help="= --malloc tunables (kept for old commands)")
    args = ap.parse_args(argv)
    if args.tune_malloc:
        args.malloc = "tunables"
    if args.malloc == "tunables" and os.environ.get("GLIBC_TUNABLES") != MALLOC_TUNABLES:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "GLIBC_TUNABLES": MALLOC_TUNABLES})
    if args.malloc == "keep" and not keep_freed_memory():
        raise SystemExit("--malloc keep needs glibc")
    malloc = {"default": "default", "keep": "keep_freed_memory",
              "tunables": os.environ.get("GLIBC_TUNABLES", "")}[args.malloc]
    cfg_fe = FrontendConfig(target_frames=98 if args.quick else 1024)
    samples = 16000 if args.quick else 160000
    cpu_batches = [2] if args.quick else [int(b) for b in args.cpu_batches.split(",")]
    vocoders = [tuple(int(v) for v in item.split("/")) for item in args.vocoders.split(",")]
    all_threads = torch.get_num_threads()
    thread_counts = [int(t) for t in args.threads.split(",")] if args.threads else list(dict.fromkeys((1, all_threads)))
    cfgs = [AugmentConfig(vocoder_n_fft=n_fft, vocoder_hop=hop) for n_fft, hop in vocoders[:1 if args.quick else None]]
    if torch.cuda.is_available() and not args.no_gpu and not args.quick:  # first: the scarcest machine time
        for cfg in cfgs:
            for b in (int(b) for b in args.gpu_batches.split(",")):
                secs = time_batched(b, "cuda", max(args.iters, 5), 2, samples, cfg_fe, cfg)
                record("batched", "cuda", all_threads, b, secs, samples, cfg, malloc)
    cpu_runs = [(cfg, threads, b) for cfg in cfgs for threads in thread_counts for b in cpu_batches]
    times: dict[int, list[tuple[float, float]]] = {i: [] for i in range(len(cpu_runs))}
    for r in range(max(1, args.rounds)):  # interleaved: every configuration sees the same load, round by round
        for i, (cfg, threads, b) in enumerate(cpu_runs):
            torch.set_num_threads(threads)
            times[i].append(time_batched(b, "cpu", args.iters, 1, samples, cfg_fe, cfg))
    torch.set_num_threads(all_threads)
    for i, (cfg, threads, b) in enumerate(cpu_runs):
        wall = statistics.median(t[0] for t in times[i])
        cpu = statistics.median(t[1] for t in times[i])
        record("batched", "cpu", threads, b, (wall, cpu), samples, cfg, malloc, len(times[i]))
    for cfg in [] if args.no_per_clip else cfgs:
        torch.set_num_threads(1)
        clips = 2 if args.quick else 4
        record("per_clip", "cpu", 1, clips, time_per_clip(clips, samples, cfg_fe, cfg), samples, cfg, malloc)
        torch.set_num_threads(all_threads)


if __name__ == "__main__":
    main()
