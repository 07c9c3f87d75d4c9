"""The benchmarks' --quick runs (what CI runs): real subprocesses, real DataLoader over WAV files, JSON lines."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from audiomosaic.config import encoder_config
from audiomosaic.masking import view_masks
from audiomosaic.model import train_flops_per_clip

ROOT = Path(__file__).resolve().parents[1]
STEP_FIELDS = {"bench", "level", "status", "device", "device_name", "torch", "precision", "model", "spec_size",
               "batch", "compile", "dynamic", "ckpt", "policy", "views", "layout", "mode", "tokens_per_view",
               "gflop_per_clip", "step_fn", "matmul_tflops"}
TIMED_FIELDS = {"step_ms", "step_ms_min", "step_ms_max", "clips_per_s", "tflops", "mfu", "hfu", "peak_gib"}
PIPELINE_FIELDS = {"path", "device", "device_name", "threads", "batch", "views_per_batch", "views_per_s",
                   "ms_per_batch", "torch", "rounds", "load1"}


def _json_lines(args: list[str], timeout: int = 120) -> list[dict]:
    r = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert lines, r.stdout + r.stderr
    return lines


@pytest.fixture(scope="module")
def quick_records() -> list[dict]:
    """One process, every level: step, train_step (GPU-style augmentation on CPU), end_to_end, memory."""
    # up to ~150 s on the shared 2-core CI VM at a load average of 10 (2026-12-04); 120 s timed out there
    return _json_lines(["bench/pretrain_step.py", "--quick", "--level", "step", "train_step", "end_to_end", "memory"],
                       timeout=600)


def test_quick_run_prints_one_record_per_configuration_and_level(quick_records):
    seen = {(r["level"], r["ckpt"]) for r in quick_records}
    assert seen == {(lv, k) for lv in ("step", "train_step", "end_to_end", "memory") for k in (0.0, 0.5)}
    for r in quick_records:
        assert r["status"] == "ok", r
        assert STEP_FIELDS - {"matmul_tflops"} <= set(r), STEP_FIELDS - set(r)
        assert r["bench"] == "pretrain_step" and r["device"] == "cpu" and r["compile"] == 0


def test_timed_levels_report_throughput_and_mfu(quick_records):
    for r in (r for r in quick_records if r["level"] != "memory"):
        assert TIMED_FIELDS | STEP_FIELDS <= set(r), (TIMED_FIELDS | STEP_FIELDS) - set(r)
        assert r["clips_per_s"] > 0 and r["step_ms"] > 0 and r["matmul_tflops"] > 0
        assert r["clips_per_s"] == pytest.approx(1e3 * r["batch"] / r["step_ms"], rel=1e-3)
        assert 0 < r["mfu"] <= r["hfu"]  # recomputation only adds hardware FLOPs
        assert (r["hfu"] > r["mfu"]) == (r["ckpt"] > 0)
    e2e = [r for r in quick_records if r["level"] == "end_to_end"]
    assert all(r["workers"] == 1 and r["skipped"] == 0 and r["data_wait_ms"] >= 0 for r in e2e)


def test_flops_follow_from_the_token_counts(quick_records):
    r = quick_records[0]
    cfg = encoder_config(r["model"], spec_size=tuple(r["spec_size"]))
    (ka, _, _), (kb, _, _) = view_masks(r["mode"], 1, (r["spec_size"][0] // 16, r["spec_size"][1] // 16),
                                        layout=r["layout"])
    assert r["tokens_per_view"] == [ka.shape[1], kb.shape[1]]
    assert r["gflop_per_clip"] == pytest.approx(train_flops_per_clip(cfg, r["tokens_per_view"]) / 1e9, rel=1e-3)


def test_memory_model_sees_checkpointing_save_memory(quick_records):
    mem = {r["ckpt"]: r for r in quick_records if r["level"] == "memory"}
    assert 0 < mem[0.5]["act_mib_per_clip"] < mem[0.0]["act_mib_per_clip"]
    assert 0 < mem[0.5]["predicted_peak_gib"] < mem[0.0]["predicted_peak_gib"]


def test_bad_arguments_fail_with_a_message(capsys):
    spec = importlib.util.spec_from_file_location("pretrain_step", ROOT / "bench" / "pretrain_step.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--quick", "--policy", "everything"]) == 2
    assert "allowed: block, attn, mlp, matmul" in capsys.readouterr().err


@pytest.mark.skipif(not (ROOT / "bench" / "pipeline.py").exists(), reason="bench/pipeline.py not present")
def test_pipeline_quick_prints_json_lines():
    for r in _json_lines(["bench/pipeline.py", "--quick"]):
        assert PIPELINE_FIELDS <= set(r), PIPELINE_FIELDS - set(r)
        assert r["views_per_s"] > 0 and r["views_per_batch"] == 2 * r["batch"]
    rows = _json_lines(["bench/pipeline.py", "--quick", "--no-gpu", "--threads", "1", "--rounds", "2", "--no-per-clip"])
    assert [(r["path"], r["rounds"]) for r in rows] == [("batched", 2)]
