"""The AASIST back-end against the authors' outputs (tests/fixtures/reference_aasist.pt), its options and plumbing."""
from pathlib import Path

import pytest
import torch

from audiomosaic.aasist import (AASISTHead, AudioMosaicAASIST, aasist_key_from_authors, convert_authors_aasist,
                                load_aasist_fixture, load_authors_aasist, model_from_fixture, verify_aasist)
from audiomosaic.reference import MODEL_TOL
from audiomosaic.train.optim import param_groups

FIXTURE = Path(__file__).parent / "fixtures" / "reference_aasist.pt"


@pytest.fixture(scope="module")
def fx():
    return load_aasist_fixture(FIXTURE)


def test_golden_tokens_and_logits_within_tolerance():
    errs = verify_aasist(FIXTURE)
    assert set(errs) == {"tokens", "logits"}
    assert all(e <= MODEL_TOL for e in errs.values()), errs


def test_strict_load_uses_every_key(fx):
    model = model_from_fixture(fx)
    missing, unexpected = load_authors_aasist(model, fx["state_dict"], strict=True)
    assert missing == [] and unexpected == []
    converted = convert_authors_aasist(fx["state_dict"])
    assert set(converted) == set(model.state_dict())
    # Only timm's unused 1000-way head is dropped; every back-end key lands under ``aasist.``.
    assert len(converted) == len(fx["state_dict"]) - 2
    assert aasist_key_from_authors("encoder.3.0.bn1.weight") == "aasist.res.3.bn1.weight"
    assert aasist_key_from_authors("first_bn1.running_var") == "aasist.bn_out.running_var"
    assert aasist_key_from_authors("blocks.0.attn.qkv.weight") is None


def _logit_err(fx, key, delta):
    sd = dict(fx["state_dict"])
    sd[key] = sd[key] + delta
    model = model_from_fixture({**fx, "state_dict": sd})
    with torch.no_grad():
        out = model(fx["input"])
    return float((out - fx["logits"]).abs().max() / fx["logits"].abs().max())


def test_a_wrong_weight_shows_and_the_bn1_quirk_holds(fx):
    assert _logit_err(fx, "encoder.2.0.conv1.weight", 0.05) > 1e-3
    assert _logit_err(fx, "GAT_layer_T.att_weight", 0.5) > 1e-4
    # The residual block drops its bn1 output (conv1 reads the raw input): bn1's weights cannot change logits.
    assert _logit_err(fx, "encoder.3.0.bn1.weight", 0.5) <= MODEL_TOL


def test_shapes_for_other_lengths(fx):
    model = model_from_fixture(fx)
    with torch.no_grad():
        for n_tokens in (3, 17, 65, 300):
            out = model.aasist(torch.randn(2, n_tokens, 64))
            assert out.shape == (2, 2) and torch.isfinite(out).all()


def test_gradient_flows_to_encoder_and_head(fx):
    model = model_from_fixture(fx).train()
    spec = fx["input"].float()
    bn1 = model.aasist.res[1].bn1
    before = bn1.running_mean.clone()
    loss = torch.nn.functional.cross_entropy(model(spec), torch.tensor([0, 1, 1]), weight=torch.tensor([0.1, 0.9]))
    loss.backward()
    for name in ("aasist.out_layer.weight", "aasist.pos_S", "aasist.master1", "aasist.res.0.conv1.weight",
                 "aasist.HtrgGAT_layer_ST22.att_weight12", "blocks.0.attn.qkv.weight", "patch_embed.proj.weight"):
        g = dict(model.named_parameters())[name].grad
        assert g is not None and g.abs().sum() > 0, name
    # Quirk: bn1's output is dropped (no gradient) but its running statistics still move in training.
    assert bn1.weight.grad is None
    assert not torch.equal(before, bn1.running_mean)


def test_layer_decay_gives_the_head_the_top_rate(fx):
    model = model_from_fixture(fx)
    groups = param_groups(model, weight_decay=0.01, layer_decay=0.75)
    scale = {n: g["lr_scale"] for g in groups for n in g["names"]}
    assert all(scale[n] == 1.0 for n in scale if n.startswith("aasist."))
    assert scale["blocks.0.norm1.weight"] < 1.0 and scale["patch_embed.proj.weight"] < scale["blocks.0.norm1.weight"]


def test_token_order_grid():
    torch.manual_seed(0)
    head_flat = AASISTHead(32, "flat").eval()
    head_grid = AASISTHead(32, "grid", grid=(6, 4)).eval()
    head_grid.load_state_dict(head_flat.state_dict())  # same parameters, different reading of the tokens
    tokens = torch.randn(2, 1 + 24, 32)
    with torch.no_grad():
        flat, grid = head_flat(tokens), head_grid(tokens)
        # An explicit (B, T, F, D) grid equals the flat tokens read through ``grid``.
        explicit = head_grid(tokens[:, 1:].reshape(2, 6, 4, 32))
    assert not torch.allclose(flat, grid)
    torch.testing.assert_close(grid, explicit)
    # Grid order ignores CLS; the flat (authors') order does not.
    tokens2 = tokens.clone()
    tokens2[:, 0] += 1.0
    with torch.no_grad():
        torch.testing.assert_close(head_grid(tokens2), grid)
        assert not torch.allclose(head_flat(tokens2), flat)
    with pytest.raises(ValueError, match="grid"):
        head_grid(torch.randn(2, 10, 32))
    with pytest.raises(ValueError, match="token_order"):
        AASISTHead(32, "freq")


def test_training_token_shuffle_is_the_authors_and_optional(fx):
    model = model_from_fixture(fx)
    spec = fx["input"].float()
    model.train()
    torch.manual_seed(0)
    shuffled = model.embed_tokens(spec)
    model.shuffle_train_tokens = False
    plain = model.embed_tokens(spec)
    assert not torch.allclose(shuffled, plain)
    torch.testing.assert_close(shuffled[:, 0], plain[:, 0])  # CLS stays first
    # A permutation of whole time columns and frequency rows: the same multiset of tokens per example.
    torch.testing.assert_close(shuffled[:, 1:].sum(1), plain[:, 1:].sum(1), rtol=1e-5, atol=1e-5)
    model.eval()
    model.shuffle_train_tokens = True
    torch.testing.assert_close(model.embed_tokens(spec), plain)  # eval never shuffles


def test_not_a_fixture(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_aasist_fixture(tmp_path / "nope.pt")
    torch.save({"format": "other"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not an AASIST fixture"):
        load_aasist_fixture(tmp_path / "x.pt")


def test_fresh_model_runs(fx):
    from audiomosaic.train.checkpoint import encoder_config_from_authors

    cfg = encoder_config_from_authors({k: v for k, v in fx["config"].items() if k != "num_classes"})
    model = AudioMosaicAASIST(cfg).eval()
    with torch.no_grad():
        assert model(fx["input"]).shape == (3, 2)


def test_verify_reference_cli_detects_the_aasist_fixture(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "audiomosaic", "verify-reference", str(FIXTURE)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "logits" in r.stdout and "all outputs within tolerance" in r.stdout, r.stdout
    fx = torch.load(FIXTURE, weights_only=True)
    fx["state_dict"]["out_layer.bias"] = fx["state_dict"]["out_layer.bias"] + 0.1
    torch.save(fx, tmp_path / "tampered.pt")
    r = subprocess.run([sys.executable, "-m", "audiomosaic", "verify-reference", str(tmp_path / "tampered.pt")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "MISMATCH" in r.stdout
