#!/usr/bin/env python
"""Throughput and memory of the AudioMosaic pre-training step on one device: one JSON line per configuration.

Levels (``--level``, one or more, all run on the same model; each line says which):

- ``step``: spectrograms already on the device -> both view masks (``masking.view_masks``, on the device) ->
  ``engine.contrastive_loss`` (encoder + projector on each view's visible tokens, NT-Xent; the all-gather is the
  identity in one process) -> backward -> grad norm -> AdamW step: ``engine.train_step`` without its first stage
  (augmentation + fbank). Model, fused AdamW, autocast dtype and ``torch.compile`` come from
  ``engine.build_trainer``, so this is the model side of what training runs.
- ``train_step``: waveforms already on the device -> ``engine.train_step`` (adds the batched GPU augmentation
  ``augment.two_view_fbank`` and ``frontend.fbank_batch``).
- ``end_to_end`` (``--end-to-end``): a DataLoader over real WAV files (``engine.pretrain_dataset`` /
  ``engine.make_loader``: ``--workers`` processes, pinned memory) -> non-blocking copies -> ``engine.train_step``.
  Without ``--manifest``, temporary 10-s WAVs are written first (a few distinct files, listed repeatedly, so the
  page cache serves them: this measures decoding, not the disk).
- ``memory`` (CPU): peak memory of fwd + bwd predicted for ``--batch`` from the bytes that live tensors hold at
  two small batches (a dispatch-mode tracker), plus 12 bytes per parameter (fp32 weights, AdamW's two moments).

FLOPs (model FLOPs, the MFU convention): backward costs 2x forward, each view runs the encoder on its visible tokens
plus CLS, so F = 3 * sum_v flops_per_clip(cfg, n_v + 1) = ``model.train_flops_per_clip``. The projector
(768x512 + 512x128 MACs per view) and NT-Xent (2B x 2B x 128 MACs per batch) are < 0.01% of F and left out.
Recomputation by gradient checkpointing is not model FLOPs; ``hfu`` adds it. ViT-B, 1024x128, paper layout
(200 + 256 tokens): F = 246 GFLOP per clip. ``mfu`` divides by a bf16 (CPU: the run's dtype) matrix-product rate
measured in the same process (``matmul_tflops``).

Timing: warm-up steps are excluded (the first one's wall time is ``first_step_s``, which holds the compilation);
CUDA steps run back to back and are timed with events; ``peak_gib`` is ``torch.cuda.max_memory_allocated`` over the
timed steps. On CUDA ``host_syncs`` lists the Python lines that synchronised with the device during one extra
step (``torch.cuda.set_sync_debug_mode``); [] means none.

Examples::

    python bench/pretrain_step.py --quick                        # seconds, CPU (CI)
    python bench/pretrain_step.py --batch 512 --compile 0 1 --ckpt 0 0.7 --layout paper reference
    python bench/pretrain_step.py --end-to-end --batch 512 --compile 1 --ckpt 0.7 --workers 8
    python bench/pretrain_step.py --level memory --model vit_base --batch 512 --ckpt 0 0.7 --precision bf16
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from audiomosaic.config import PretrainConfig, apply_overrides, encoder_config
from audiomosaic.masking import view_masks
from audiomosaic.model import train_flops_per_clip
from audiomosaic.train.dist import DistInfo
from audiomosaic.train.optim import cosine_lr, set_lr
from audiomosaic.train.pretrain import (
    TwoViews,
    build_trainer,
    contrastive_loss,
    make_loader,
    pretrain_dataset,
    train_step,
)
from audiomosaic.train.runtime import autocast, resolve_device, resolve_precision
from audiomosaic.train.step import optimizer_step

LEVELS = ("step", "train_step", "end_to_end", "memory")
QUICK = dict(model="vit_nano", frames=128, batch=[4], ckpt=[0.0, 0.5], compile=[0], warmup=1, steps=2,
             peak_seconds=0.2, files=8, clip_seconds=1.0, workers=[1])  # --quick: these become the defaults


# ------------------------------------------------------------------------------------------------ config

def make_config(args: argparse.Namespace, c: dict) -> PretrainConfig:
    """PretrainConfig defaults (the authors' masks, tau, AdamW, schedule) + encoder preset + this configuration."""
    enc = {f"encoder.{k}": v for k, v in encoder_config(args.model).__dict__.items()}
    return apply_overrides(PretrainConfig(), {
        **enc, "encoder.spec_size": (args.frames, 128), "encoder.grad_ckpt_fraction": c["ckpt"],
        "encoder.grad_ckpt_policy": c["policy"], "frontend.target_frames": args.frames,
        "data.clip_seconds": args.clip_seconds, "data.batch_size": c["batch"], "data.num_workers": args.workers[0],
        "mask.layout": c["layout"], "mask.mode": c["mode"], "runtime.precision": args.precision,
        "runtime.compile": bool(c["compile"]), "runtime.device": args.device, "runtime.progress": False})


def grid(args: argparse.Namespace) -> list[dict]:
    """Every configuration, ordered so that one trainer (model + optimizer) serves consecutive ones.

    Without checkpointing (ckpt 0) the policy does not matter: only the first policy is kept.
    """
    return [dict(compile=co, ckpt=k, policy=p, views=v, layout=lay, mode=args.mode, batch=b)
            for co in args.compile for p in args.policy for k in args.ckpt for v in args.views
            for lay in args.layout for b in args.batch if k > 0 or p == args.policy[0]]


def trainer_key(c: dict) -> tuple:
    return c["compile"], c["ckpt"], c["policy"], c["views"]


# ------------------------------------------------------------------------------------------------ helpers

class ConcatViews(TwoViews):
    """Both views through the encoder as one batch (needs equal token counts: tt/ff modes), projector per view."""

    def forward(self, spec_a, keep_a, spec_b, keep_b):
        m, n = self.model, spec_a.shape[0]
        f = m.forward_head(m.forward_features(torch.cat([spec_a, spec_b]), torch.cat([keep_a, keep_b])), True)
        return m.projector(f[:n]), m.projector(f[n:])  # each BatchNorm still sees one view (docs/method.md §4)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(device: torch.device, dtype: torch.dtype, seconds: float) -> float:
    """Measured dense matrix-product rate (TFLOP/s) of square products, ~``seconds`` of work."""
    n = 8192 if device.type == "cuda" else 512
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(device)
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            a @ b
        count += 10
        sync(device)
    return 2 * n ** 3 * count / (time.perf_counter() - t0) / 1e12


def recompute_flops_per_clip(cfg, tokens: list[int], n_ckpt: int) -> float:
    """Forward FLOPs that checkpointing repeats in backward (per clip, both views), for ``hfu``."""
    d, r = cfg.embed_dim, cfg.mlp_ratio
    total = 0.0
    for n in (t + 1 for t in tokens):
        attn, mlp = 2 * (4 * n * d * d + 2 * n * n * d), 2 * (2 * r * n * d * d)
        per_block = {"block": attn + mlp, "attn": attn, "mlp": mlp, "matmul": 0.0}[cfg.grad_ckpt_policy]
        total += n_ckpt * per_block
    return total


def token_counts(cfg: PretrainConfig, grid_: tuple[int, int]) -> list[int]:
    m = cfg.mask
    (ka, _, _), (kb, _, _) = view_masks(m.mode, 1, grid_, ratio_time=m.ratio_time, ratio_freq=m.ratio_freq,
                                        ratio=m.ratio, layout=m.layout)
    return [ka.shape[1], kb.shape[1]]


# ------------------------------------------------------------------------------------------------ one step

def spec_step(t, spec_a: torch.Tensor, spec_b: torch.Tensor) -> dict[str, torch.Tensor]:
    """``audiomosaic.train.pretrain.train_step`` from the masks on, for spectrograms already on the device. No host sync."""
    m = t.cfg.mask
    set_lr(t.optimizer, cosine_lr(t.step, t.schedule))
    (keep_a, _, _), (keep_b, _, _) = view_masks(
        m.mode, spec_a.shape[0], t.raw.grid, ratio_time=m.ratio_time, ratio_freq=m.ratio_freq, ratio=m.ratio,
        layout=m.layout, generator=t.generator, device=t.device)

    def forward(views: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        loss, top1 = contrastive_loss(t.model, *views, t.cfg.tau, 0)
        return {"loss": loss, "top1": top1}

    return optimizer_step([(spec_a, keep_a, spec_b, keep_b)], forward, t.optimizer, t.scaler, t.raw.parameters(),
                          device=t.device, dtype=t.dtype, grad_clip=t.cfg.optim.grad_clip)


def synthetic_batch(t, batch: int, level: str) -> tuple:
    """Device inputs of a ``step`` (two normalised-fbank-like views) or ``train_step`` (waveforms) call."""
    g = torch.Generator(device=t.device).manual_seed(0)
    if level == "step":
        shape = (batch, 1, *t.cfg.encoder.spec_size)
        return tuple(torch.randn(shape, device=t.device, generator=g) * 0.5 for _ in range(2))
    s = int(round(t.cfg.data.clip_seconds * t.cfg.frontend.sample_rate))
    wav = torch.randn(batch, s, device=t.device, generator=g) * 0.1
    return wav, torch.full((batch,), s, device=t.device)


def time_steps(fn, n: int, device: torch.device) -> list[float]:
    """Milliseconds of ``n`` back-to-back calls (CUDA events; one synchronisation at the end)."""
    if device.type != "cuda":
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            out.append(1e3 * (time.perf_counter() - t0))
        return out
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(n + 1)]
    ev[0].record()
    for i in range(n):
        fn()
        ev[i + 1].record()
    torch.cuda.synchronize(device)
    return [ev[i].elapsed_time(ev[i + 1]) for i in range(n)]


def host_syncs(fn, device: torch.device) -> list[str] | None:
    """Python lines that made the host wait for the device during one call (None off CUDA)."""
    if device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(0)
        sync(device)
    return sorted({f"{Path(w.filename).name}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)})


# ------------------------------------------------------------------------------------------------ levels

def measure(t, c: dict, args: argparse.Namespace, level: str) -> dict:
    """Time ``--steps`` steps after ``--warmup`` at the ``step`` or ``train_step`` level."""
    inputs = synthetic_batch(t, c["batch"], level)
    fn = lambda: spec_step(t, *inputs) if level == "step" else train_step(t, *inputs)  # noqa: E731
    t0 = time.perf_counter()
    fn()
    sync(t.device)
    first = time.perf_counter() - t0
    for _ in range(args.warmup - 1):
        fn()
    sync(t.device)
    if t.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(t.device)
    ms = time_steps(fn, args.steps, t.device)
    out = {"first_step_s": first, "step_ms_all": [round(x, 2) for x in ms], **memory_stats(t.device)}
    out["host_syncs"] = host_syncs(fn, t.device)
    return out


def memory_stats(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"peak_gib": None, "reserved_gib": None}
    return {"peak_gib": torch.cuda.max_memory_allocated(device) / 2**30,
            "reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30}


def write_wavs(folder: Path, n: int, seconds: float, sr: int = 16000, seed: int = 0) -> list[Path]:
    """``n`` 16-bit mono WAVs of tones + noise (never silence: zeros can run faster than real data)."""
    import wave

    rng, paths = np.random.default_rng(seed), []
    s = int(round(seconds * sr))
    tt = np.arange(s) / sr
    for i in range(n):
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(80, 4000) * tt) + 0.05 * rng.standard_normal(s)
        p = folder / f"clip{i:05d}.wav"
        with wave.open(str(p), "wb") as w:  # stdlib: no soundfile needed to write
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(sr)
            w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
        paths.append(p)
    return paths


def end_to_end(t, c: dict, args: argparse.Namespace, tmp: Path, workers: int) -> dict:
    """DataLoader over WAV files -> pinned, non-blocking copies -> engine.train_step, timed on the host clock."""
    need = (args.warmup + args.steps) * c["batch"]
    manifest = args.manifest
    if not manifest:
        paths = sorted(tmp.glob("clip*.wav")) or write_wavs(tmp, args.files, args.clip_seconds)
        reps = -(-need // len(paths))
        manifest = tmp / "manifest.json"
        manifest.write_text(json.dumps({"data": [{"wav": str(p), "labels": ""} for p in paths * reps]}))
    t.cfg = apply_overrides(t.cfg, {"data.manifest": str(manifest), "data.num_workers": workers})
    loader = make_loader(pretrain_dataset(t.cfg, DistInfo()), t.cfg.data, 0, DistInfo(), t.device)
    loader.batch_sampler.set_epoch(0)
    it, wait, n = iter(loader), [], 0
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            sync(t.device)
            if t.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(t.device)
            t0, wait = time.perf_counter(), []
        w0 = time.perf_counter()
        batch = next(it)
        wait.append(time.perf_counter() - w0)
        wav = batch["wav"].to(t.device, non_blocking=True)
        train_step(t, wav, batch["length"].to(t.device, non_blocking=True))
        n += len(batch["skipped"])
    sync(t.device)
    total = time.perf_counter() - t0
    del it, loader
    return {"step_ms_all": [round(1e3 * total / args.steps, 2)], "data_wait_ms": 1e3 * sum(wait) / args.steps,
            "skipped": n, "manifest": str(manifest) if args.manifest else None, **memory_stats(t.device)}


def memory_model(t, c: dict, args: argparse.Namespace) -> dict:
    """Predicted peak GiB of fwd + bwd at ``batch`` from the live tensor bytes at batches 2 and 4 (CPU).

    Live bytes are recorded after every op; the op sequence does not depend on the batch, so each point is
    extrapolated linearly to ``batch`` and the prediction is the largest, plus 12 bytes per parameter (weights and
    AdamW's two moments, allocated before the step). Gradients and activations are in the trace.
    """
    traces = [live_bytes_trace(t, b) for b in (2, 4)]
    if len(traces[0]) != len(traces[1]):
        raise RuntimeError("op sequences differ between batch sizes; cannot extrapolate")
    a, b = np.array(traces[0], dtype=np.float64), np.array(traces[1], dtype=np.float64)
    at_batch = a + (b - a) / 2 * (c["batch"] - 2)
    fixed = 12 * sum(p.numel() for p in t.raw.parameters())
    i = int(at_batch.argmax())
    return {"act_mib_per_clip": (b[i] - a[i]) / 2 / 2**20, "predicted_peak_gib": (fixed + at_batch[i]) / 2**30,
            "peak_at_op": f"{i}/{len(a)}"}


def live_bytes_trace(t, batch: int) -> list[int]:
    """Bytes held by tensors created during one fwd + bwd, after each dispatched op (a TorchDispatchMode)."""
    from torch.multiprocessing.reductions import StorageWeakRef
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class LiveBytes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.live, self.cur, self.trace = {}, 0, []

        def __torch_dispatch__(self, func, types, args_=(), kwargs=None):
            out = func(*args_, **(kwargs or {}))
            for k in [k for k, (ref, _) in self.live.items() if ref.expired()]:
                self.cur -= self.live.pop(k)[1]
            for x in tree_leaves(out):
                if isinstance(x, torch.Tensor) and x.untyped_storage().data_ptr() not in self.live:
                    st = x.untyped_storage()
                    self.live[st.data_ptr()] = (StorageWeakRef(st), st.nbytes())
                    self.cur += st.nbytes()
            self.trace.append(self.cur)
            return out

    spec_a, spec_b = synthetic_batch(t, batch, "step")
    m = t.cfg.mask
    (ka, _, _), (kb, _, _) = view_masks(m.mode, batch, t.raw.grid, ratio_time=m.ratio_time, ratio_freq=m.ratio_freq,
                                        ratio=m.ratio, layout=m.layout, generator=torch.Generator().manual_seed(0))
    tracker = LiveBytes()
    torch.manual_seed(0)  # the same drop-path draws (and op sequence) at both batch sizes
    with tracker:
        with autocast(t.device, t.dtype):
            loss, _ = contrastive_loss(t.model, spec_a, ka, spec_b, kb, t.cfg.tau, 0)
        loss.backward()
    t.optimizer.zero_grad(set_to_none=True)
    return tracker.trace


# ------------------------------------------------------------------------------------------------ driver

def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{os.uname().machine} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def new_trainer(cfg: PretrainConfig, c: dict):
    """engine.build_trainer (model, fused AdamW on CUDA, compile in place) + the views wrapper of ``c``."""
    free_memory()
    t = build_trainer(cfg, DistInfo(), steps_per_epoch=1000)
    if c["views"] == "concat":
        t.model = ConcatViews(t.raw)
        if c["compile"]:
            t.model.compile()
    return t


def summarise(rec: dict, res: dict, batch: int, flop: float, recompute: float, peak: float | None) -> dict:
    """Median step time -> clips/s, TFLOP/s, MFU (model FLOPs) and HFU (+ recomputation)."""
    rec.update(res)
    if "step_ms_all" in res:
        ms = statistics.median(res["step_ms_all"])
        cps = 1e3 * batch / ms
        rec.update(step_ms=ms, step_ms_min=min(res["step_ms_all"]), step_ms_max=max(res["step_ms_all"]),
                   clips_per_s=cps, tflops=flop * cps / 1e12)
        if peak:
            rec.update(mfu=flop * cps / 1e12 / peak, hfu=(flop + recompute) * cps / 1e12 / peak)
    return rec


def run_config(t, cfg: PretrainConfig, c: dict, args: argparse.Namespace, level: str, tmp: Path, base: dict,
               workers: int = 0) -> dict:
    """One JSON record: configuration, token counts, FLOPs, and the measurement of ``level`` (or its failure)."""
    tokens = token_counts(cfg, t.raw.grid)
    flop = train_flops_per_clip(cfg.encoder, tokens)
    rec = {**base, "level": level, "model": args.model, "spec_size": list(cfg.encoder.spec_size), **c,
           "tokens_per_view": tokens, "gflop_per_clip": flop / 1e9, "status": "ok",
           "step_fn": "engine.train_step" if level in ("train_step", "end_to_end") else
           "engine.contrastive_loss + grad norm + AdamW (engine.train_step minus augmentation/fbank)"}
    if c["views"] == "concat" and tokens[0] != tokens[1]:
        return {**rec, "status": "skipped", "error": f"views=concat needs equal token counts, got {tokens}"}
    if level == "end_to_end":
        rec.update(workers=workers, clip_seconds=args.clip_seconds)
    try:
        if level == "memory":
            return {**rec, **memory_model(t, c, args)}
        res = end_to_end(t, c, args, tmp, workers) if level == "end_to_end" else measure(t, c, args, level)
    except torch.OutOfMemoryError:
        res = {"status": "oom", **memory_stats(t.device)}
    except Exception as e:  # noqa: BLE001 - one failing configuration must not end a GPU session's sweep
        res = {"status": "error", "error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}
    finally:
        t.optimizer.zero_grad(set_to_none=True)
        free_memory()  # every configuration starts from an empty allocator cache
    recompute = recompute_flops_per_clip(cfg.encoder, tokens, t.raw.n_ckpt)
    return summarise(rec, res, c["batch"], flop, recompute, base.get("matmul_tflops"))


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--level", choices=LEVELS, nargs="+", default=["step"], help="one or more levels, in order")
    p.add_argument("--end-to-end", action="store_true", help="same as --level end_to_end")
    p.add_argument("--quick", action="store_true", help="tiny CPU-sized defaults (seconds): " + json.dumps(QUICK))
    p.add_argument("--model", default="vit_base", help="encoder preset")
    p.add_argument("--frames", type=int, default=1024, help="input frames T (F = 128 mel bins)")
    p.add_argument("--batch", type=int, nargs="+", default=[512])
    p.add_argument("--compile", type=int, nargs="+", choices=(0, 1), default=[0])
    p.add_argument("--dynamic", choices=("auto", "static"), default="auto",
                   help="auto: torch.compile's default (a second token count makes a dynamic-shape graph); "
                        "static: one static graph per token count")
    p.add_argument("--ckpt", type=float, nargs="+", default=[0.7], help="grad_ckpt_fraction values")
    p.add_argument("--policy", nargs="+", default=["block"], help="grad_ckpt_policy values")
    p.add_argument("--layout", nargs="+", default=["paper"], help="mask layouts: paper (200/256), reference")
    p.add_argument("--mode", default="tf", help="masking mode (tf, tt, ff, unstructured)")
    p.add_argument("--views", nargs="+", choices=("separate", "concat"), default=["separate"])
    p.add_argument("--precision", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), bf16, fp32")
    p.add_argument("--device", default="auto")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--workers", type=int, nargs="+", default=[8], help="DataLoader workers (end_to_end)")
    p.add_argument("--manifest", default="", help="end_to_end: a JSON manifest (default: temporary WAVs)")
    p.add_argument("--files", type=int, default=256, help="end_to_end: distinct temporary WAV files")
    p.add_argument("--clip-seconds", type=float, default=10.0)
    p.add_argument("--peak-seconds", type=float, default=1.0, help="duration of the matmul-rate measurement")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", default="", help="also append the JSON lines to this file")
    if p.parse_known_args(argv)[0].quick:
        p.set_defaults(**QUICK)  # explicit arguments still win
    args = p.parse_args(argv)
    if args.end_to_end:
        args.level = ["end_to_end"]
    args.warmup = max(args.warmup, 1)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if any(args.compile):  # importing dynamo costs seconds: only when compiling
        torch._dynamo.config.automatic_dynamic_shapes = args.dynamic == "auto"
    try:
        configs = [(c, make_config(args, c)) for c in grid(args)]
        device = resolve_device(args.device)
        dtype = resolve_precision(args.precision, device)
    except ValueError as e:
        print(f"pretrain_step: error: {e}", file=sys.stderr)
        return 2
    base = {"bench": "pretrain_step", "device": device.type, "device_name": device_name(device),
            "torch": torch.__version__, "precision": str(dtype).replace("torch.", ""), "dynamic": args.dynamic}
    if args.level != ["memory"]:
        base["matmul_tflops"] = matmul_tflops(device, dtype, args.peak_seconds)
    t, key = None, None
    with tempfile.TemporaryDirectory() as tmp:
        for c, cfg in configs:
            if trainer_key(c) != key:
                t, key = None, trainer_key(c)
                t = new_trainer(cfg, c)
            for level in args.level:
                for w in args.workers if level == "end_to_end" else [0]:
                    t.cfg = cfg  # layout, mode and batch of this configuration; the model is shared
                    emit(run_config(t, cfg, c, args, level, Path(tmp), base, w), args.out)
    return 0


def emit(rec: dict, out: str) -> None:
    line = json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in rec.items()})
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    sys.exit(main())
