"""Shared fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tiny`` recipe built once per session (seed 0): kws10 + inst11, a few hundred 1-s clips."""
    from audiomosaic.data import build

    return build("tiny", tmp_path_factory.mktemp("tiny_corpus"), seed=0, progress=False, workers=2)


@pytest.fixture(scope="module")
def one_thread_module():
    """The CI box has 2 cores shared by several processes: oversubscribed intra-op threads are ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
