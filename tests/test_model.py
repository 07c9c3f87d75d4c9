import pytest
import torch

from audiomosaic.config import EncoderConfig, encoder_config
from audiomosaic.masking import time_mask, view_masks
from audiomosaic.model import AudioMosaic, create_model, param_count
from audiomosaic.pos_embed import resize_pos_embed, sincos_2d
from audiomosaic.presets import ENCODER_PRESETS

PRESETS = ["vit_nano", "vit_mini", "vit_tiny", "vit_small", "vit_base"]


@pytest.mark.parametrize("name", PRESETS)
def test_forward_backward_every_preset(name):
    torch.manual_seed(0)
    model = create_model(name, spec_size=(128, 128), drop_path_rate=0.1)
    spec = torch.randn(2, 1, 128, 128)
    (ka, _, _), (kb, _, _) = view_masks("tf", 2, model.grid, generator=torch.Generator().manual_seed(0))
    z = model.project(spec, ka) + model.project(spec, kb)
    z.pow(2).mean().backward()
    assert z.shape == (2, 128)
    grads = [p.grad for n, p in model.named_parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert not model.projector[4].bias.requires_grad  # frozen zero bias of the last BN


def test_base_parameter_count_matches_published():
    model = create_model("vit_base", projector=False)
    encoder = param_count(model) - sum(p.numel() for p in model.fc_norm.parameters())
    assert abs(encoder / 1e6 - 86.1) < 0.6  # about 86.1 M (HF listing)


def test_tokens_are_time_major():
    model = create_model("vit_nano", spec_size=(64, 32)).eval()
    assert model.grid == (4, 2)
    spec = torch.zeros(1, 1, 64, 32)
    spec[0, 0, 16:32, 16:32] = 5.0  # time patch 1, freq patch 1 -> token 1*2+1 = 3
    x = model.patch_embed(spec)
    changed = (x - model.patch_embed(torch.zeros_like(spec))).abs().sum(-1)[0]
    assert changed.argmax().item() == 3 and (changed > 1e-6).sum().item() == 1


def test_masked_forward_uses_only_visible_tokens():
    model = create_model("vit_nano", spec_size=(256, 128)).eval()
    keep, _, _ = time_mask(2, model.grid, 0.6, torch.Generator().manual_seed(0))
    tokens = model.forward_features(torch.randn(2, 1, 256, 128), keep)
    assert tokens.shape == (2, 1 + keep.shape[1], 64)


def test_eval_masking_is_deterministic_and_mask_free_by_default():
    model = create_model("vit_nano", spec_size=(128, 128), drop_path_rate=0.3).eval()
    spec = torch.randn(3, 1, 128, 128)
    assert torch.equal(model.forward_features(spec), model.forward_features(spec))
    assert model.forward_features(spec).shape[1] == 1 + 64


def test_forward_intermediates_matches_forward_features():
    model = create_model("vit_nano", spec_size=(128, 128)).eval()
    spec = torch.randn(2, 1, 128, 128)
    inter = model.forward_intermediates(spec)
    assert len(inter) == model.cfg.depth
    torch.testing.assert_close(inter[-1], model.forward_features(spec))
    assert torch.equal(model.forward_intermediates(spec, layers=[1])[0], inter[1])


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    plain = create_model("vit_nano", spec_size=(128, 128), drop_path_rate=0.0)
    ckpt = create_model("vit_nano", spec_size=(128, 128), drop_path_rate=0.0, grad_ckpt_fraction=0.5)
    ckpt.load_state_dict(plain.state_dict())
    assert ckpt.n_ckpt == 2
    spec = torch.randn(4, 1, 128, 128)
    for m in (plain, ckpt):
        m.project(spec).sum().backward()
    for (n, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=n)


def test_shorter_inputs_resize_position_table_on_true_grid():
    model = create_model("vit_nano", spec_size=(1024, 128)).eval()
    out = model.forward_features(torch.randn(1, 1, 128, 128))  # Speech Commands length: 8x8 grid
    assert out.shape == (1, 65, 64)
    pos = model.pos_embed.detach()
    small = resize_pos_embed(pos, (64, 8), (32, 8))
    assert small.shape == (1, 1 + 256, 64)
    # frequency axis untouched: resizing time only keeps each frequency row's mean profile
    grid = pos[0, 1:].view(64, 8, -1)
    torch.testing.assert_close(small[0, 1:].view(32, 8, -1).mean(0), grid.mean(0), rtol=0.05, atol=0.02)


def test_sincos_matches_mae_convention():
    t = sincos_2d(8, (2, 3))
    assert t.shape == (7, 8) and torch.all(t[0] == 0)
    # first half of channels encodes the column index, second half the row index
    torch.testing.assert_close(t[1:, :4].view(2, 3, 4)[0], t[1:, :4].view(2, 3, 4)[1])
    torch.testing.assert_close(t[1:, 4:].view(2, 3, 4)[:, 0], t[1:, 4:].view(2, 3, 4)[:, 2])


def test_reference_sincos_layout_is_the_table_of_the_transposed_grid():
    # 256 x 128 -> (n_time, n_freq) = (16, 8); the released code builds the table on the (n_freq, n_time) = (8, 16)
    # grid and adds it to the time-major tokens (docs/method.md §5.3)
    n_t, n_f, d = 16, 8, 64
    paper = create_model("vit_nano", spec_size=(256, 128)).pos_embed.detach()[0]
    ref = create_model("vit_nano", spec_size=(256, 128), sincos_layout="reference").pos_embed.detach()[0]
    torch.testing.assert_close(paper, sincos_2d(d, (n_t, n_f)), rtol=0, atol=0)
    torch.testing.assert_close(ref, sincos_2d(d, (n_f, n_t)), rtol=0, atol=0)
    # what that means: read on its own (n_freq, n_time) grid and transposed back to (n_time, n_freq), the reference
    # table is the paper's with its two halves swapped (time encoded where the paper encodes frequency) ...
    back = ref[1:].view(n_f, n_t, d).transpose(0, 1)  # (n_t, n_f, d)
    swapped = torch.cat([back[..., d // 2:], back[..., :d // 2]], dim=-1)
    torch.testing.assert_close(swapped, paper[1:].view(n_t, n_f, d), rtol=0, atol=0)
    # ... but the tokens are time-major, so token (t, f) gets the row of grid cell divmod(t * n_f + f, n_t) instead
    assert not torch.allclose(ref, paper)


def test_custom_size_and_presets():
    cfg = encoder_config("vit_tiny", depth=2)
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads) == (192, 2, 3)
    assert ENCODER_PRESETS["small"] == dict(embed_dim=384, depth=12, num_heads=6)
    model = AudioMosaic(EncoderConfig(embed_dim=32, depth=1, num_heads=2, spec_size=(64, 64)), num_classes=3)
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 3)


@pytest.mark.parametrize("shape", [(2, 128, 128), (2, 2, 128, 128), (2, 1, 100, 128)])
def test_wrong_spectrogram_shape_raises(shape):
    model = create_model("vit_nano", spec_size=(128, 128))
    with pytest.raises(ValueError, match=r"\(B, 1, T, F\)|divisible"):
        model(torch.randn(*shape))


def test_unknown_preset_and_key_raise():
    with pytest.raises(ValueError, match="allowed"):
        create_model("vit_giant")
    with pytest.raises(ValueError, match="unknown config key 'depthh'"):
        create_model("vit_nano", depthh=3)


# --- performance paths (bench/NOTES.md): same function as the authors' conv + mask-after-projection ---------------

def test_linear_patch_embed_equals_conv():
    torch.manual_seed(0)
    pe = create_model("vit_nano", spec_size=(256, 128)).patch_embed
    spec = torch.randn(3, 1, 256, 128)
    conv = pe.norm(pe.proj(spec).flatten(2).transpose(1, 2))  # the authors' Conv2d, flattened time-major
    torch.testing.assert_close(pe(spec), conv, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["time", "freq", "unstructured"])
def test_masking_before_projection_equals_after(kind):
    from audiomosaic.masking import gather_tokens, single_mask

    torch.manual_seed(0)
    model = create_model("vit_nano", spec_size=(256, 128)).eval()
    spec = torch.randn(3, 1, 256, 128)
    keep, _, _ = single_mask(kind, 3, model.grid, generator=torch.Generator().manual_seed(1))
    every = gather_tokens(model.patch_embed(spec) + model.pos_embed[:, 1:], keep)  # project all, then drop
    cls = (model.cls_token + model.pos_embed[:, :1]).expand(3, -1, -1)
    ref = model.norm_pre(torch.cat([cls, every], dim=1))
    torch.testing.assert_close(model.embed_tokens(spec, keep), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("policy", ["block", "attn", "mlp", "matmul"])
def test_checkpoint_policies_give_same_gradients_with_drop_path(policy):
    torch.manual_seed(0)
    plain = create_model("vit_nano", spec_size=(128, 128), drop_path_rate=0.3)
    ckpt = create_model("vit_nano", spec_size=(128, 128), drop_path_rate=0.3, grad_ckpt_fraction=1.0,
                        grad_ckpt_policy=policy)
    ckpt.load_state_dict(plain.state_dict())
    spec = torch.randn(4, 1, 128, 128)
    (keep, _, _), _ = view_masks("tf", 4, plain.grid, generator=torch.Generator().manual_seed(0))
    for m in (plain, ckpt):
        torch.manual_seed(1)  # the same drop-path draws; recomputation must replay them
        m.project(spec, keep).pow(2).sum().backward()
    for (n, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=n)


def test_unknown_checkpoint_policy_raises():
    with pytest.raises(ValueError, match="allowed: block, attn, mlp, matmul"):
        create_model("vit_nano", grad_ckpt_policy="everything")


def test_train_flops_per_clip_counts_both_views():
    from audiomosaic.model import flops_per_clip, train_flops_per_clip

    cfg = encoder_config("vit_base")
    assert train_flops_per_clip(cfg, [200, 256]) == 3 * (flops_per_clip(cfg, 201) + flops_per_clip(cfg, 257))
    assert 240e9 < train_flops_per_clip(cfg, [200, 256]) < 250e9  # ~243 GFLOP quoted for the paper geometry
