"""``data check``: every unusable and suspicious case, each a real file written here."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiomosaic.data.check import UNUSABLE, WARNINGS, check_file, check_manifest


def _noise(n: int, channels: int = 1) -> np.ndarray:
    x = 0.1 * np.random.default_rng(0).standard_normal((n, channels))
    return x[:, 0] if channels == 1 else x


@pytest.fixture()
def cases(tmp_path: Path) -> dict[str, Path]:
    """One file per reason (plus a clean one), keyed by the reason it must produce."""
    d = tmp_path / "audio"
    d.mkdir()
    sf.write(d / "clean.wav", _noise(16000), 16000)
    sf.write(d / "source.wav", _noise(16000), 16000, subtype="PCM_16")
    raw = (d / "source.wav").read_bytes()
    (d / "truncated.wav").write_bytes(raw[: len(raw) // 2])  # header promises 16000 frames
    (d / "broken_header.wav").write_bytes(raw[:30])  # cut before the data chunk
    (d / "garbage.wav").write_bytes(os.urandom(4096))
    (d / "empty.wav").write_bytes(b"")
    sf.write(d / "no_samples.wav", np.zeros(0), 16000)
    nan = _noise(16000).astype(np.float32)
    nan[100] = np.nan
    sf.write(d / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(d / "stereo44k.wav", _noise(44100, channels=2), 44100)
    sf.write(d / "short.wav", _noise(399), 16000)  # one sample under a 25 ms (400-sample) frame
    sf.write(d / "silent.wav", np.zeros(16000), 16000)
    sf.write(d / "long.flac", _noise(3601 * 400), 400, format="FLAC")  # just over an hour at 400 Hz
    return {p.stem: p for p in sorted(d.iterdir()) if p.name != "source.wav"} | {"missing": d / "missing.wav"}


EXPECTED = {
    "clean": set(), "truncated": {"truncated"}, "broken_header": {"unreadable"}, "garbage": {"unreadable"},
    "empty": {"empty"}, "no_samples": {"empty"}, "nan": {"non-finite"}, "stereo44k": {"resample", "multichannel"},
    "short": {"too-short"}, "silent": {"all-zero"}, "long": {"over-an-hour", "resample"}, "missing": {"missing"},
}


def test_every_case_gets_its_reasons(cases: dict[str, Path]) -> None:
    assert set(cases) == set(EXPECTED)
    for name, path in cases.items():
        assert {f.reason for f in check_file(str(path))} == EXPECTED[name], name
    assert set().union(*EXPECTED.values()) == set(UNUSABLE) | set(WARNINGS)  # every reason is exercised


def _write_manifest(path: Path, files: list[Path]) -> Path:
    path.write_text(json.dumps({"data": [{"wav": str(f), "labels": ""} for f in files]}))
    return path


def test_report_counts_and_cli_exit_status(cases: dict[str, Path], tmp_path: Path) -> None:
    bad = _write_manifest(tmp_path / "all.json", list(cases.values()))
    report = check_manifest(bad, workers=2)
    unusable = {n for n, r in EXPECTED.items() if r & set(UNUSABLE)}
    assert report.unusable_paths == sorted(str(cases[n]) for n in unusable) and report.exit_code == 1
    assert report.counts()["unreadable"] == 2 and report.counts()["resample"] == 2
    res = subprocess.run([sys.executable, "-m", "audiomosaic.cli.data", "check", str(bad)], capture_output=True,
                         text=True)
    assert res.returncode == 1, res.stderr
    lines = res.stdout.splitlines()
    assert f"checked {len(cases)} files: {len(unusable)} unusable, 4 with warnings only, 1 clean" == lines[-1]
    assert any(ln.startswith("UNUSABLE") and "non-finite" in ln and str(cases["nan"]) in ln for ln in lines)
    assert any(ln.split() == ["unreadable", "2", "unusable"] for ln in lines)


def test_warnings_alone_exit_zero(cases: dict[str, Path], tmp_path: Path) -> None:
    ok = _write_manifest(tmp_path / "ok.json", [cases[n] for n in ("clean", "stereo44k", "silent", "truncated")])
    report = check_manifest(ok)
    assert report.exit_code == 0 and len(report.findings) == 4
