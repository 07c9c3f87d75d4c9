"""Shared fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tiny`` recipe built once per session (seed 0): kws10 + inst11, a few hundred 1-s clips."""
    from audiomosaic.data import build

    return build("tiny", tmp_path_factory.mktemp("tiny_corpus"), seed=0, progress=False, workers=2)
