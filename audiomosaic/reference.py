"""``verify-reference``: recompute every output stored in a golden fixture of the authors' code and compare.

The fixture format is described in tests/fixtures/README.md. A model that loads its state dicts through
:func:`audiomosaic.train.checkpoint.load_authors_state_dict` (the converter users call for released checkpoints) and
reproduces its outputs computes the same function as the authors' implementation.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from audiomosaic.config import FrontendConfig
from audiomosaic.frontend import fbank
from audiomosaic.losses import nt_xent
from audiomosaic.model import AudioMosaic
from audiomosaic.train.checkpoint import encoder_config_from_authors, load_authors_state_dict

MODEL_TOL = 1e-5  # model outputs and the loss
FRONTEND_TOL = 1e-4
REQUIRED = ("encoder_config", "pretrain_state_dict", "classifier_state_dict", "input_spec", "tokens", "pooled",
            "projection", "block_outputs", "classifier_logits", "ntxent", "frontend")


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max|out - ref| / max|ref| over the whole tensor."""
    out, ref = out.double(), ref.double()
    return float((out - ref).abs().max() / ref.abs().max().clamp(min=1e-30))


def load_fixture(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"fixture {path} does not exist")
    try:
        fx = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any load failure: not a fixture
        raise ValueError(f"{path} is not a weights-only torch file ({type(e).__name__})") from None
    missing = [k for k in REQUIRED if not isinstance(fx, dict) or k not in fx]
    if missing:
        raise ValueError(f"{path} is not a reference fixture: missing keys {missing}")
    return fx


@torch.no_grad()
def verify(fx: dict[str, Any]) -> dict[str, float]:
    """Relative error of every recomputed output (keys as in the fixture)."""
    cfg = encoder_config_from_authors(fx["encoder_config"])
    spec = fx["input_spec"].float()
    pre = AudioMosaic(cfg, projector=True).eval()
    load_authors_state_dict(pre, fx["pretrain_state_dict"])
    tokens = pre.forward_features(spec)
    errs = {"tokens": rel_err(tokens, fx["tokens"]), "pooled": rel_err(pre.pool(tokens), fx["pooled"]),
            "projection": rel_err(pre.project(spec), fx["projection"]),
            "block_outputs": rel_err(torch.stack(pre.forward_intermediates(spec)), fx["block_outputs"])}
    clf = AudioMosaic(cfg, num_classes=int(fx["classifier_logits"].shape[-1]), projector=False).eval()
    load_authors_state_dict(clf, fx["classifier_state_dict"])
    errs["classifier_logits"] = rel_err(clf(spec), fx["classifier_logits"])
    nx = fx["ntxent"]
    errs["ntxent"] = rel_err(nt_xent(nx["z0"], nx["z1"], float(nx["tau"])), nx["loss"])
    fe = fx["frontend"]
    fcfg = FrontendConfig(sample_rate=16000, target_frames=int(fe["target_frames"]),
                          norm_mean=float(fe["norm_mean"]), norm_std=float(fe["norm_std"]))
    errs["fbank_normalised"] = rel_err(fbank(fe["waveform"], int(fe["sample_rate"]), fcfg), fe["fbank_normalised"])
    return errs
