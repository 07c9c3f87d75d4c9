"""Probe heads on pooled features equal the token-level computations they stand for (heads.py docstring)."""
import math

import pytest
import torch
import torch.nn.functional as F

from audiomosaic.heads import ProbeHead, pooled_entries
from audiomosaic.masking import time_mask
from audiomosaic.model import LN_EPS, create_model


@pytest.fixture(scope="module")
def model_and_spec():
    torch.manual_seed(0)
    model = create_model("vit_nano", spec_size=(64, 32), num_classes=5, projector=False).eval()
    for p in model.parameters():  # move norms/heads off their identity init so the checks can fail
        p.data.add_(0.05 * torch.randn_like(p))
    spec = torch.randn(3, 1, 64, 32)
    return model, spec


def test_pooled_entries_shapes_and_final_entry(model_and_spec):
    model, spec = model_and_spec
    feats = pooled_entries(model, spec)
    depth, d = len(model.blocks), model.cfg.embed_dim
    assert feats["mean"].shape == feats["norm_mean"].shape == (3, depth + 1, d)
    blocks = model.forward_intermediates(spec)
    for i, tokens in enumerate(blocks):
        torch.testing.assert_close(feats["mean"][:, i], model.pool(tokens))
    torch.testing.assert_close(feats["mean"][:, -1], feats["mean"][:, -2])  # final output repeats the last block
    keep, _, _ = time_mask(3, model.grid, 0.5, generator=torch.Generator().manual_seed(0))
    masked = pooled_entries(model, spec, keep_idx=keep)
    torch.testing.assert_close(masked["mean"][:, -1], model.pool(model.forward_features(spec, keep)))


def test_linear_head_on_final_entry_equals_the_classifier(model_and_spec):
    model, spec = model_and_spec
    head = ProbeHead(model.cfg.embed_dim, 5, "linear", num_entries=len(model.blocks) + 1, layer=-1)
    head.init_norm_from(model.fc_norm)
    head.head.load_state_dict(model.head.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(head(pooled_entries(model, spec)), model(spec))


def test_weighted_head_with_one_hot_weights_equals_linear_head(model_and_spec):
    model, spec = model_and_spec
    feats = pooled_entries(model, spec)
    n = len(model.blocks) + 1
    linear = ProbeHead(model.cfg.embed_dim, 5, "linear", n, layer=1)
    weighted = ProbeHead(model.cfg.embed_dim, 5, "weighted", n)
    weighted.norm.load_state_dict(linear.norm.state_dict())
    weighted.head.load_state_dict(linear.head.state_dict())
    with torch.no_grad():
        weighted.layer_weights.fill_(-math.inf)
        weighted.layer_weights[1] = 0.0
        torch.testing.assert_close(weighted(feats), linear(feats))


def test_attentive_head_equals_token_level_layernorm_then_pooling(model_and_spec):
    model, spec = model_and_spec
    n, d = len(model.blocks) + 1, model.cfg.embed_dim
    torch.manual_seed(1)
    head = ProbeHead(d, 5, "attentive", n)
    with torch.no_grad():
        head.entry_norm_w.normal_(1.0, 0.3)
        head.entry_norm_b.normal_(0.0, 0.3)
        got = head(pooled_entries(model, spec))
        blocks = model.forward_intermediates(spec)
        tokens = torch.stack(blocks + [blocks[-1]], dim=1)  # (B, L, N, D)
        pooled = torch.stack([F.layer_norm(tokens[:, l], (d,), head.entry_norm_w[l], head.entry_norm_b[l],
                                           LN_EPS).mean(1) for l in range(n)], dim=1)  # (B, L, D)
        attn = (head.key(pooled) @ head.query.T).squeeze(-1).div(math.sqrt(d)).softmax(-1)  # (B, L)
        expected = head.head(head.norm((attn[:, :, None] * head.value(pooled)).sum(1)))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_weighted_and_attentive_heads_train(model_and_spec):
    model, spec = model_and_spec
    feats = pooled_entries(model, spec)
    for kind, name in (("weighted", "layer_weights"), ("attentive", "query")):
        head = ProbeHead(model.cfg.embed_dim, 5, kind, len(model.blocks) + 1)
        head(feats).pow(2).sum().backward()
        assert getattr(head, name).grad is not None and getattr(head, name).grad.abs().sum() > 0


def test_bad_kind_and_layer_raise():
    with pytest.raises(ValueError, match="allowed: linear, weighted, attentive"):
        ProbeHead(8, 2, "mlp")
    with pytest.raises(ValueError, match="outside"):
        ProbeHead(8, 2, "linear", num_entries=5, layer=5)
