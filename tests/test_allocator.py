"""utils.keep_freed_memory: the CPU augmentation stops page-faulting fresh buffers (measured, in subprocesses:
the setting is process-wide and cannot be undone)."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

CODE = """
import resource, sys, torch
torch.set_num_threads(1)
from audiomosaic.augment.chain import two_view_fbank
from audiomosaic.config import AugmentConfig, FrontendConfig
from audiomosaic.train.runtime import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory() and keep_freed_memory()  # idempotent
wav = torch.randn(2, 160000, generator=torch.Generator().manual_seed(0))  # two 10-s clips
gen, fe = torch.Generator().manual_seed(0), FrontendConfig()
for _ in range(2):  # warm-up: the heap grows to its working size
    two_view_fbank(wav, AugmentConfig(), fe, gen)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    two_view_fbank(wav, AugmentConfig(), fe, gen)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CODE, mode], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_keep_freed_memory_stops_page_faults_of_the_cpu_augmentation() -> None:
    default, keep = _faults("default"), _faults("keep")
    assert keep * 4 < default, (keep, default)
