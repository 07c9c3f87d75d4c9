"""Masked-reconstruction objective (audiomosaic.mae): targets, loss, decoder routing, encoder export, overfit."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from audiomosaic.config import encoder_config
from audiomosaic.mae import (DecoderConfig, MaeDecoder, MaskedAutoencoder, masked_mse, patch_targets,
                             predict_mean_score)
from audiomosaic.masking import unstructured_mask
from audiomosaic.model import AudioMosaic
from audiomosaic.pos_embed import sincos_2d

SPEC = (96, 128)  # grid 6 x 8: non-square, time != freq
GRID = (6, 8)
N = 48


pytestmark = pytest.mark.usefixtures("one_thread_module")  # 2 shared cores


def tiny_cfg(**kw):
    return encoder_config("vit_nano", spec_size=SPEC, depth=2, drop_path_rate=0.0, **kw)


def tiny_mae(**kw) -> MaskedAutoencoder:
    torch.manual_seed(0)
    return MaskedAutoencoder(tiny_cfg(), DecoderConfig(embed_dim=128, depth=1, num_heads=4), **kw)


# ------------------------------------------------------------------------------------------------------- targets

def test_patch_order_matches_encoder_patch_embedding():
    torch.manual_seed(0)
    enc = AudioMosaic(tiny_cfg(), projector=False)
    spec = torch.randn(2, 1, *SPEC)
    t = patch_targets(spec, 16, norm_pix=False)
    assert t.shape == (2, N, 256)
    assert torch.equal(t, enc.patch_embed.patchify(spec))
    # ... and with the convolution itself: target k projected by the kernel = conv output at patch k (time-major)
    conv = enc.patch_embed.proj
    ref = conv(spec).flatten(2).transpose(1, 2)  # (B, N, D), row-major over (time, freq)
    got = t @ conv.weight.reshape(conv.out_channels, -1).T + conv.bias
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    # a single hot pixel at time patch 2, freq patch 5, in-patch (3, 7) -> patch 2*8+5, pixel 3*16+7
    hot = torch.zeros(1, 1, *SPEC)
    hot[0, 0, 2 * 16 + 3, 5 * 16 + 7] = 1.0
    nz = patch_targets(hot, 16, norm_pix=False)[0].nonzero().tolist()
    assert nz == [[2 * 8 + 5, 3 * 16 + 7]]


def test_normalised_targets_have_zero_mean_unit_variance():
    spec = 3.0 + 5.0 * torch.randn(3, 1, *SPEC)
    t = patch_targets(spec, 16, norm_pix=True)
    torch.testing.assert_close(t.mean(-1), torch.zeros(3, N), atol=1e-5, rtol=0)
    torch.testing.assert_close(t.var(-1), torch.ones(3, N), atol=1e-4, rtol=0)
    # a constant (silent) patch maps to zeros, not NaN
    assert torch.equal(patch_targets(torch.full((1, 1, 16, 16), -2.0), 16, True), torch.zeros(1, 1, 256))


def test_patch_targets_rejects_bad_shapes():
    with pytest.raises(ValueError, match="divisible"):
        patch_targets(torch.zeros(1, 1, 100, 128), 16, True)
    with pytest.raises(ValueError, match=r"\(B, 1, T, F\)"):
        patch_targets(torch.zeros(1, 96, 128), 16, True)


# ---------------------------------------------------------------------------------------------------------- loss

def test_loss_counts_masked_patches_only():
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(2, N, 256, generator=g), torch.randn(2, N, 256, generator=g)
    _, _, mask = unstructured_mask(2, GRID, 0.75, torch.Generator().manual_seed(2))
    loss = masked_mse(pred, target, mask)
    vis = (~mask).nonzero()[0].tolist()
    hid = mask.nonzero()[0].tolist()
    t2 = target.clone()
    t2[vis[0], vis[1]] += 10.0
    assert masked_mse(pred, t2, mask) == loss  # visible patch: no effect at all
    t3 = target.clone()
    t3[hid[0], hid[1]] += 10.0
    assert masked_mse(pred, t3, mask) > loss + 1.0
    # the value: mean over masked patches of the per-patch MSE
    per_patch = (pred - target).pow(2).mean(-1)
    torch.testing.assert_close(loss, per_patch[mask].mean())
    assert masked_mse(pred, target, mask.float()) == loss  # bool and 0/1 float masks agree
    assert masked_mse(pred, target, torch.zeros_like(mask)) == 0.0  # nothing masked: 0, not NaN
    with pytest.raises(ValueError, match="shapes"):
        masked_mse(pred, target[:, :-1], mask)


def test_predict_mean_score_is_zero_predictor_loss_with_normalised_targets():
    spec = 2.0 * torch.randn(2, 1, *SPEC) - 1.0
    _, _, mask = unstructured_mask(2, GRID, 0.8, torch.Generator().manual_seed(0))
    score = predict_mean_score(spec, 16, mask, norm_pix=True)
    target = patch_targets(spec, 16, norm_pix=True)
    torch.testing.assert_close(score, masked_mse(torch.zeros_like(target), target, mask))
    assert abs(score.item() - (1 - 1 / 256)) < 1e-4  # biased / unbiased variance of a unit-variance patch
    # raw targets: the within-patch variance of the masked patches, computed from the data
    raw = patch_targets(spec, 16, norm_pix=False)
    expected = raw.var(-1, unbiased=False)[mask].mean()
    torch.testing.assert_close(predict_mean_score(spec, 16, mask, norm_pix=False), expected)
    assert abs(expected.item() - 4.0) < 0.2


# ------------------------------------------------------------------------------------------------------- decoder

def test_decoder_positions_and_routing_on_non_square_grid():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    dec = MaeDecoder(cfg, DecoderConfig(embed_dim=32, depth=1, num_heads=4))
    assert dec.grid == GRID
    torch.testing.assert_close(dec.pos_embed[0], sincos_2d(32, GRID))
    assert not torch.allclose(dec.pos_embed[0, 1:], sincos_2d(32, GRID[::-1])[1:])  # (time, freq), not (8, 6)
    assert "pos_embed" not in dec.state_dict()  # fixed table, rebuilt from the grid

    keep, restore, mask = unstructured_mask(3, GRID, 0.8, torch.Generator().manual_seed(3))
    tokens = torch.randn(3, 1 + keep.shape[1], cfg.embed_dim)
    seen = {}
    dec.blocks[0].register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0].detach()))
    pred = dec(tokens, restore)
    assert pred.shape == (3, N, 256)
    x = seen["x"] - dec.pos_embed  # the decoder's token at each slot, positions removed
    emb = dec.embed(dec.norm_in(tokens)).detach()
    torch.testing.assert_close(x[:, 0], emb[:, 0])  # CLS slot
    for b in range(3):
        torch.testing.assert_close(x[b, 1:][keep[b]], emb[b, 1:])  # visible token j sits at patch keep[b, j]
        hidden = x[b, 1:][mask[b]]
        torch.testing.assert_close(hidden, dec.mask_token.detach()[0].expand_as(hidden))
    with pytest.raises(ValueError, match="grid"):
        dec(tokens, restore, grid=(8, 8))


def test_decoder_other_grid_uses_its_own_positions():
    dec = MaeDecoder(tiny_cfg(), DecoderConfig(embed_dim=32, depth=1, num_heads=4))
    keep, restore, _ = unstructured_mask(1, (4, 8), 0.5, torch.Generator().manual_seed(0))
    assert dec(torch.randn(1, 1 + keep.shape[1], 64), restore, grid=(4, 8)).shape == (1, 32, 256)
    torch.testing.assert_close(dec.positions((4, 8))[0], sincos_2d(32, (4, 8)))


def test_decoder_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        DecoderConfig(embed_dim=30, num_heads=3)
    with pytest.raises(ValueError, match="mask_ratio"):
        MaskedAutoencoder(tiny_cfg(), mask_ratio=0.0)


# -------------------------------------------------------------------------------------------------- full model

def test_mask_ratio_sets_visible_tokens_and_encoder_sees_only_them():
    mae = tiny_mae(mask_ratio=0.8).eval()
    seen = []
    mae.encoder.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    spec = torch.randn(2, 1, *SPEC)
    out = mae(spec, generator=torch.Generator().manual_seed(0))
    n_keep = int(N * 0.2)  # 9
    assert seen == [(2, 1 + n_keep, 64)]
    assert out["mask"].dtype == torch.bool and out["mask"].shape == (2, N)
    assert out["mask"].sum(1).tolist() == [N - n_keep] * 2
    assert out["pred"].shape == (2, N, 256) and out["loss"].ndim == 0 and out["baseline"].ndim == 0
    # a masked patch never reaches the encoder: changing it changes the loss, not the predictions
    t, f = divmod(out["mask"][0].nonzero()[0].item(), GRID[1])
    spec2 = spec.clone()
    spec2[0, 0, t * 16:(t + 1) * 16, f * 16:(f + 1) * 16] += torch.randn(16, 16)
    out2 = mae(spec2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out2["pred"], out["pred"]) and out2["loss"] != out["loss"]
    assert set(mae(spec, generator=torch.Generator().manual_seed(0))) == {"loss", "pred", "mask", "baseline"}


def test_encoder_state_dict_has_no_decoder_and_loads_strictly(tmp_path):
    from audiomosaic.train.checkpoint import load_any, load_authors_state_dict, save_weights

    mae = tiny_mae()
    sd = mae.encoder_state_dict()
    assert not any(k.startswith(("decoder", "encoder.")) or "mask_token" in k for k in sd)
    assert not any(k.startswith("projector") for k in sd)
    fresh = AudioMosaic(mae.cfg, projector=False)
    fresh.load_state_dict(sd, strict=True)
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in sd.items())
    # with a projector: only the projector's keys are missing
    with_proj = AudioMosaic(mae.cfg, projector=True)
    missing, unexpected = load_authors_state_dict(with_proj, sd, strict=False)
    assert unexpected == [] and missing and all(k.startswith("projector.") for k in missing)
    # the project's export/import path: save_weights(mae.encoder) -> load_any rebuilds the encoder
    path = save_weights(mae.encoder, tmp_path / "enc", meta={"objective": "mae"})
    loaded = load_any(path)
    assert loaded.projector is None and loaded.head is None
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in sd.items())


def test_tiny_model_overfits_one_batch():
    mae = tiny_mae(mask_ratio=0.8).train()
    spec = torch.randn(2, 1, *SPEC, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(mae.parameters(), lr=3e-3)
    losses = []
    for _ in range(200):
        out = mae(spec, generator=torch.Generator().manual_seed(0))  # the same mask every step
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
        if losses[-1] < 0.3 * losses[0]:
            break
    assert abs(out["baseline"].item() - (1 - 1 / 256)) < 0.02
    # starts above the predict-the-mean score (xavier-initialised prediction adds its own variance), not far off
    assert out["baseline"].item() < losses[0] < out["baseline"].item() + 1.0
    assert min(losses) < 0.3 * losses[0], f"loss {losses[0]:.3f} -> {min(losses):.3f} in {len(losses)} steps"
    # the decoder and the encoder both learn (fc_norm is unused by this objective)
    grads = {n for n, p in mae.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert "decoder.mask_token" in grads and "encoder.blocks.0.attn.qkv.weight" in grads
    assert "encoder.patch_embed.proj.weight" in grads and "encoder.fc_norm.weight" not in grads
