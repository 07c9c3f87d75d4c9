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


NANO_FRAMES = 128  # the shared nano encoder's window: 128 frames = 1.28 s, 8 patch columns of 160 ms


@pytest.fixture(scope="module")
def nano_model():
    """A seeded random vit_nano encoder on 128 x 128 inputs, in eval mode (embedding and HEAR tests)."""
    from audiomosaic.model import create_model

    torch.manual_seed(0)
    return create_model("vit_nano", spec_size=(NANO_FRAMES, 128)).eval()


@pytest.fixture(scope="module")
def nano_export(nano_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``nano_model`` saved as safetensors + sidecar with its front end, as ``pretrain`` exports encoders."""
    from audiomosaic.config import FrontendConfig, to_dict
    from audiomosaic.train.checkpoint import save_weights

    path = tmp_path_factory.mktemp("ckpt") / "nano.safetensors"
    return save_weights(nano_model, path, meta={"frontend": to_dict(FrontendConfig(target_frames=NANO_FRAMES))})
