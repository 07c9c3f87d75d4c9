import pytest
import torch

from audiomosaic.config import Layout, MaskConfig, MaskMode, apply_overrides, choices
from audiomosaic.masking import (LAYOUTS, MODES, freq_mask, gather_tokens, no_mask, restore_tokens, single_mask,
                                 time_mask, unstructured_mask, view_masks)

GRIDS = {1024: (64, 8), 512: (32, 8), 128: (8, 8)}


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("frames", [1024, 512, 128])
def test_paper_layout_counts(frames):
    grid = GRIDS[frames]
    keep_t, _, _ = time_mask(4, grid, 0.6, _gen())
    keep_f, _, _ = freq_mask(4, grid, 0.4, _gen())
    assert keep_t.shape == (4, int(grid[0] * 0.4) * grid[1])
    assert keep_f.shape == (4, grid[0] * int(grid[1] * 0.6))


def test_paper_counts_at_1024_match_spec():
    assert time_mask(2, (64, 8), 0.6, _gen())[0].shape[1] == 200
    assert freq_mask(2, (64, 8), 0.4, _gen())[0].shape[1] == 256


def test_reference_counts_at_1024_match_spec():
    assert time_mask(2, (64, 8), 0.6, _gen(), layout="reference")[0].shape[1] == 192
    assert freq_mask(2, (64, 8), 0.4, _gen(), layout="reference")[0].shape[1] == 304


@pytest.mark.parametrize("frames", [1024, 512, 128])
def test_reference_layout_counts(frames):
    n_time, n_freq = GRIDS[frames]
    # the code views the sequence as (n_freq blocks) x (n_time consecutive tokens)
    assert time_mask(3, (n_time, n_freq), 0.6, _gen(), layout="reference")[0].shape[1] == int(n_freq * 0.4) * n_time
    assert freq_mask(3, (n_time, n_freq), 0.4, _gen(), layout="reference")[0].shape[1] == int(n_time * 0.6) * n_freq


def test_paper_time_mask_drops_whole_time_steps():
    _, _, mask = time_mask(8, (64, 8), 0.6, _gen(1))
    m = mask.view(8, 64, 8)  # (B, time, freq), time-major tokens
    assert torch.all(m.all(dim=2) | (~m).all(dim=2))  # each time step entirely kept or entirely dropped
    assert torch.all((~m).all(dim=2).sum(1) == 25)


def test_paper_freq_mask_drops_whole_bands():
    _, _, mask = freq_mask(8, (64, 8), 0.4, _gen(2))
    m = mask.view(8, 64, 8)
    assert torch.all(m.all(dim=1) | (~m).all(dim=1))  # each band entirely kept or dropped
    assert torch.all((~m).all(dim=1).sum(1) == 4)


def test_reference_time_mask_keeps_contiguous_blocks_of_8_time_patches():
    _, _, mask = time_mask(4, (64, 8), 0.6, _gen(3), layout="reference")
    blocks = mask.view(4, 8, 64)  # 8 blocks of 64 consecutive tokens = 8 time patches x 8 freq
    assert torch.all(blocks.all(dim=2) | (~blocks).all(dim=2))
    assert torch.all((~blocks).all(dim=2).sum(1) == 3)


def test_reference_freq_mask_repeats_pattern_in_every_block_and_is_not_row_dropping():
    _, _, mask = freq_mask(4, (64, 8), 0.4, _gen(4), layout="reference")
    blocks = mask.view(4, 8, 64)
    assert torch.equal(blocks, blocks[:, :1].expand_as(blocks))
    m = mask.view(4, 64, 8)  # true (time, freq) grid: some band is partly kept
    partial = ~(m.all(dim=1) | (~m).all(dim=1))
    assert partial.any()


def test_keep_restore_round_trip():
    x = torch.randn(5, 512, 16)
    for keep, restore, mask in view_masks("tf", 5, (64, 8), generator=_gen(5)):
        kept = gather_tokens(x, keep)
        back = restore_tokens(kept, restore)
        assert torch.equal(back[~mask], x[~mask])
        assert torch.all(back[mask] == 0)
        # restore . order == identity on indices
        order = torch.cat([keep, torch.nonzero(mask)[:, 1].view(5, -1)], dim=1)
        assert torch.equal(torch.gather(order, 1, restore), torch.arange(512).expand(5, 512))


def test_seeded_determinism_and_independence_across_examples():
    a = time_mask(6, (64, 8), 0.6, _gen(7))[0]
    b = time_mask(6, (64, 8), 0.6, _gen(7))[0]
    c = time_mask(6, (64, 8), 0.6, _gen(8))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len({tuple(r.tolist()) for r in a}) > 1  # per-example masks differ


@pytest.mark.parametrize("mode", ["tf", "tt", "ff", "unstructured", "none"])
def test_view_modes(mode):
    (ka, _, _), (kb, _, _) = view_masks(mode, 2, (64, 8), ratio=0.8, generator=_gen())
    expected = {"tf": (200, 256), "tt": (200, 200), "ff": (256, 256), "unstructured": (102, 102),
                "none": (512, 512)}[mode]
    assert (ka.shape[1], kb.shape[1]) == expected


def test_single_mask_kinds():
    assert single_mask("none", 2, (8, 8))[0].shape == (2, 64)
    assert single_mask("unstructured", 2, (8, 8), ratio=0.5, generator=_gen())[0].shape == (2, 32)
    assert torch.equal(no_mask(1, (2, 2))[0], torch.arange(4)[None])
    assert unstructured_mask(3, (8, 8), 0.25, _gen())[0].shape == (3, 48)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_bad_ratio_raises(bad):
    with pytest.raises(ValueError, match=r"outside \[0, 1\)"):
        time_mask(1, (64, 8), bad)


def test_mode_and_layout_sets_are_the_configs():
    assert (MODES, LAYOUTS) == (choices(MaskMode), choices(Layout))
    for mode in MODES:  # every mode the config accepts is one view_masks draws
        cfg = apply_overrides(MaskConfig(), {"mode": mode})
        view_masks(cfg.mode, 1, (8, 8), layout=cfg.layout)


def test_bad_mode_and_layout_raise():
    with pytest.raises(ValueError, match="allowed: tf, tt, ff, unstructured, none"):
        view_masks("diag", 1, (64, 8))
    with pytest.raises(ValueError, match="allowed: paper, reference"):
        time_mask(1, (64, 8), 0.5, layout="other")
