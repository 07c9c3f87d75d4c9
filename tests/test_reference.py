import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from audiomosaic.train.checkpoint import load_any, load_authors_state_dict, save_weights, load_weights
from audiomosaic.reference import FRONTEND_TOL, MODEL_TOL, load_fixture, verify

FIXTURE = Path(__file__).parent / "fixtures" / "reference_vit_tiny.pt"


def test_fixture_outputs_within_tolerance():
    errs = verify(load_fixture(FIXTURE))
    assert set(errs) == {"tokens", "pooled", "projection", "block_outputs", "classifier_logits", "ntxent",
                         "fbank_normalised"}
    for key, err in errs.items():
        assert err <= (FRONTEND_TOL if key == "fbank_normalised" else MODEL_TOL), (key, err)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "audiomosaic", "verify-reference", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_cli_passes_on_fixture():
    r = _cli(FIXTURE)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all outputs within tolerance" in r.stdout


def test_cli_fails_with_one_line_reason(tmp_path):
    r = _cli(tmp_path / "missing.pt")
    assert r.returncode != 0 and "does not exist" in r.stdout and "Traceback" not in r.stderr
    bad = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, bad)
    r = _cli(bad)
    assert r.returncode != 0 and "missing keys" in r.stdout


def test_cli_detects_a_mismatch(tmp_path):
    fx = torch.load(FIXTURE, weights_only=True)
    fx["pretrain_state_dict"]["blocks.1.mlp.fc2.bias"] += 0.01  # a wrong weight must show
    path = tmp_path / "tampered.pt"
    torch.save(fx, path)
    r = _cli(path)
    assert r.returncode == 1 and "MISMATCH" in r.stdout


@pytest.mark.parametrize("prefix", ["", "_orig_mod.", "module.", "module._orig_mod."])
def test_prefixed_checkpoints_load_strictly(tmp_path, prefix):
    fx = torch.load(FIXTURE, weights_only=True)
    sd = {prefix + k: v for k, v in fx["classifier_state_dict"].items()}
    path = tmp_path / "ckpt.pth"
    torch.save({"model": sd, "epoch": 3}, path)  # the authors' training checkpoint layout
    model = load_any(path, spec_size=(256, 128), num_heads=4).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(fx["input_spec"]), fx["classifier_logits"], rtol=1e-5, atol=1e-6)


def test_strict_loading_rejects_missing_keys():
    from audiomosaic.train.checkpoint import encoder_config_from_authors
    from audiomosaic.model import AudioMosaic

    fx = torch.load(FIXTURE, weights_only=True)
    model = AudioMosaic(encoder_config_from_authors(fx["encoder_config"]))
    sd = dict(fx["pretrain_state_dict"])
    sd.pop("fc_norm.weight")
    with pytest.raises(RuntimeError, match="fc_norm.weight"):
        load_authors_state_dict(model, sd)


def test_safetensors_round_trip(tmp_path):
    fx = torch.load(FIXTURE, weights_only=True)
    from audiomosaic.train.checkpoint import encoder_config_from_authors
    from audiomosaic.model import AudioMosaic

    model = AudioMosaic(encoder_config_from_authors(fx["encoder_config"])).eval()
    load_authors_state_dict(model, fx["pretrain_state_dict"])
    path = save_weights(model, tmp_path / "enc", meta={"note": "test"})
    assert path.suffix == ".safetensors" and path.with_suffix(".json").exists()
    again = load_weights(path).eval()
    with torch.no_grad():
        assert torch.equal(again.project(fx["input_spec"]), model.project(fx["input_spec"]))
