"""Masked reconstruction (AudioMAE-style) objective: a light decoder, patch targets, masked MSE.

The encoder is the unchanged :class:`audiomosaic.model.AudioMosaic` (built with ``projector=False``): it sees only
the visible patches (``keep_idx``), and the decoder reconstructs every patch's pixels from those tokens plus a
learned mask token at each dropped position. The loss is the per-patch MSE averaged over the dropped patches only.

Recipe (AudioMAE, Huang et al. 2022, facebookresearch/AudioMAE ``submit_pretrain_audioset2M.sh`` and
``models_mae.py``): unstructured masking ratio 0.8, per-patch normalised targets (``norm_pix_loss``), decoder width
512 with 16 heads and MLP ratio 4. Its default global-attention decoder has 8 blocks (``mae_vit_base_patch16`` =
``..._dec512d8b``); the released AudioSet recipe uses ``--decoder_mode 1``: 16 Swin (local-attention) blocks with
4x4 windows. Here the decoder is always global attention and its sizes are config (CPU-scale defaults).

Token order everywhere is time-major: patch k = t * n_freq + f (see :mod:`audiomosaic.masking`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from audiomosaic.config import EncoderConfig
from audiomosaic.masking import restore_tokens, unstructured_mask
from audiomosaic.model import LN_EPS, AudioMosaic, Block
from audiomosaic.pos_embed import sincos_2d

Grid = tuple[int, int]  # (n_time, n_freq)
NORM_PIX_EPS = 1e-6  # AudioMAE/MAE: (x - mean) / sqrt(var + 1e-6)


@dataclass(frozen=True)
class DecoderConfig:
    """Reconstruction decoder sizes and target normalisation.

    Defaults are a light CPU-scale decoder. AudioMAE (ViT-B encoder) used embed_dim=512, num_heads=16,
    mlp_ratio=4.0 and depth 8 (global attention, its default) or 16 (Swin local attention, its released AudioSet
    recipe), with ``norm_pix_loss=True`` and mask ratio 0.8.
    """

    embed_dim: int = 128
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    norm_pix_loss: bool = True  # targets normalised per patch (mean 0, var 1), as AudioMAE's pre-training

    def __post_init__(self) -> None:
        if self.embed_dim % 4 or self.embed_dim % self.num_heads:
            raise ValueError(f"decoder embed_dim={self.embed_dim} must be divisible by 4 (sin-cos) and by "
                             f"num_heads={self.num_heads}")
        if self.depth < 0:
            raise ValueError(f"decoder depth must be >= 0, got {self.depth}")


# ------------------------------------------------------------------------------------------------ pure functions

def patch_targets(spec: torch.Tensor, patch_size: int, norm_pix: bool) -> torch.Tensor:
    """Reconstruction targets (B, N, p*p) from a (B, 1, T, F) spectrogram, detached.

    ``F.unfold`` is by definition the im2col of the patch-embedding convolution, so patch k and pixel j line up
    with ``PatchEmbed``: patches time-major (k = t * n_freq + f), pixels (time, freq) row-major within a patch.
    With ``norm_pix`` each patch is standardised by its own mean and (unbiased) variance, as AudioMAE.
    """
    if spec.ndim != 4 or spec.shape[1] != 1:
        raise ValueError(f"spectrogram must be (B, 1, T, F), got shape {tuple(spec.shape)}")
    if spec.shape[2] % patch_size or spec.shape[3] % patch_size:
        raise ValueError(f"spectrogram (T, F)={tuple(spec.shape[2:])} must be divisible by patch size {patch_size}")
    x = F.unfold(spec.detach().float(), kernel_size=patch_size, stride=patch_size).transpose(1, 2)  # (B, N, p*p)
    if norm_pix:
        mean, var = x.mean(dim=-1, keepdim=True), x.var(dim=-1, keepdim=True)
        x = (x - mean) / (var + NORM_PIX_EPS).sqrt()
    return x


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked patches of the per-patch MSE. pred, target (B, N, P); mask (B, N), 1/True = dropped.

    Visible patches contribute nothing (MAE: reconstructing what the encoder saw is trivial). With no masked
    patch at all the result is 0, not NaN (the count is clamped to 1; no host sync).
    """
    if pred.shape != target.shape or mask.shape != pred.shape[:2]:
        raise ValueError(f"shapes disagree: pred {tuple(pred.shape)}, target {tuple(target.shape)}, "
                         f"mask {tuple(mask.shape)} (expected (B, N, P), (B, N, P), (B, N))")
    per_patch = (pred.float() - target.float()).pow(2).mean(dim=-1)  # (B, N)
    m = mask.to(per_patch.dtype)
    return (per_patch * m).sum() / m.sum().clamp_min(1.0)


def predict_mean_score(spec: torch.Tensor, patch_size: int, mask: torch.Tensor, norm_pix: bool) -> torch.Tensor:
    """Loss of the constant-per-patch predictor that outputs each masked patch's own mean (scalar, no grad).

    This is the within-patch variance of the targets averaged over masked patches: what remains once every
    patch's level is right. With normalised targets the mean is 0, so it is the zero predictor's loss, about
    1 - 1/p^2 (biased over unbiased variance). A model whose loss is not below it has learned no structure.
    """
    with torch.no_grad():
        target = patch_targets(spec, patch_size, norm_pix)
        return masked_mse(target.mean(dim=-1, keepdim=True).expand_as(target), target, mask)


# ------------------------------------------------------------------------------------------------------- modules

class MaeDecoder(nn.Module):
    """Encoder tokens of the visible patches -> pixel predictions for every patch.

    Args:
        encoder_cfg: the encoder's config (its width; the blocks reuse its bias settings).
        cfg: decoder sizes.
        grid: (n_time, n_freq) patch grid of the positions table (default: the encoder's ``spec_size`` grid).
    """

    def __init__(self, encoder_cfg: EncoderConfig, cfg: DecoderConfig = DecoderConfig(), grid: Grid | None = None):
        super().__init__()
        p = encoder_cfg.patch_size
        self.grid: Grid = tuple(grid) if grid is not None else (encoder_cfg.spec_size[0] // p,
                                                                 encoder_cfg.spec_size[1] // p)
        d = cfg.embed_dim
        # MAE normalises the encoder output before the decoder; ours has no final token norm (use_fc_norm), and it
        # lives here so the saved encoder keeps exactly AudioMosaic's keys.
        self.norm_in = nn.LayerNorm(encoder_cfg.embed_dim, eps=LN_EPS)
        self.embed = nn.Linear(encoder_cfg.embed_dim, d)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        # Fixed sin-cos table on the true time-major grid, CLS slot (zeros) first; not saved (it is recomputed).
        self.register_buffer("pos_embed", sincos_2d(d, self.grid)[None], persistent=False)  # (1, 1 + N, d)
        block_cfg = dataclasses.replace(encoder_cfg, embed_dim=d, depth=cfg.depth, num_heads=cfg.num_heads,
                                        mlp_ratio=cfg.mlp_ratio, drop_path_rate=0.0)
        self.blocks = nn.ModuleList([Block(block_cfg, 0.0) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(d, eps=LN_EPS)
        self.pred = nn.Linear(d, p * p)  # one input channel
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():  # MAE's decoder init: xavier-uniform Linear, zero bias, unit LayerNorm
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight), nn.init.zeros_(m.bias)
        nn.init.normal_(self.mask_token, std=0.02)

    def positions(self, grid: Grid) -> torch.Tensor:
        """(1, 1 + n_time * n_freq, d) table for ``grid`` (the stored one at the built size)."""
        if tuple(grid) == self.grid:
            return self.pos_embed
        return sincos_2d(self.pos_embed.shape[-1], tuple(grid))[None].to(self.pos_embed.device)

    def forward(self, tokens: torch.Tensor, restore_idx: torch.Tensor, grid: Grid | None = None) -> torch.Tensor:
        """tokens (B, 1 + n_keep, D_enc), CLS first; restore_idx (B, N) from masking -> predictions (B, N, p*p).

        ``restore_idx[b, k]`` is patch k's position in ``[visible ; dropped]``, so positions >= n_keep are dropped.
        """
        grid = self.grid if grid is None else tuple(grid)
        n = restore_idx.shape[1]
        if n != grid[0] * grid[1]:
            raise ValueError(f"restore_idx covers {n} patches, grid {grid} has {grid[0] * grid[1]}")
        x = self.embed(self.norm_in(tokens))  # (B, 1 + n_keep, d)
        cls, vis = x[:, :1], x[:, 1:]
        full = restore_tokens(vis, restore_idx)  # (B, N, d), zeros where dropped
        dropped = (restore_idx >= vis.shape[1])[..., None]  # (B, N, 1)
        full = torch.where(dropped, self.mask_token.to(full.dtype), full)
        x = torch.cat([cls, full], dim=1) + self.positions(grid).to(x.dtype)  # (B, 1 + N, d)
        for blk in self.blocks:
            x = blk(x)
        return self.pred(self.norm(x))[:, 1:]  # drop the CLS slot


class MaskedAutoencoder(nn.Module):
    """AudioMosaic encoder + :class:`MaeDecoder`, trained by masked reconstruction.

    Args:
        encoder_cfg: encoder config; the encoder is ``AudioMosaic(encoder_cfg, projector=False)``.
        decoder_cfg: decoder sizes and ``norm_pix_loss``.
        mask_ratio: fraction of patches dropped per example, in (0, 1) (AudioMAE: 0.8).
    """

    def __init__(self, encoder_cfg: EncoderConfig, decoder_cfg: DecoderConfig = DecoderConfig(),
                 mask_ratio: float = 0.8):
        super().__init__()
        if not 0.0 < mask_ratio < 1.0:  # > 0: at least one masked patch, else the loss has nothing to average
            raise ValueError(f"mask_ratio={mask_ratio} must be in (0, 1)")
        self.cfg = encoder_cfg
        self.decoder_cfg = decoder_cfg
        self.mask_ratio = mask_ratio
        self.encoder = AudioMosaic(encoder_cfg, projector=False)
        self.decoder = MaeDecoder(encoder_cfg, decoder_cfg)

    @property
    def patch_size(self) -> int:
        return self.cfg.patch_size

    def grid_of(self, spec: torch.Tensor) -> Grid:
        return spec.shape[2] // self.patch_size, spec.shape[3] // self.patch_size

    def no_weight_decay(self) -> set[str]:
        return {f"encoder.{k}" for k in self.encoder.no_weight_decay()} | {"decoder.mask_token"}

    def forward(self, spec: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """spec (B, 1, T, F) -> dict(loss (), pred (B, N, p*p), mask (B, N) bool (True = dropped), baseline ()).

        ``baseline`` is :func:`predict_mean_score` on the same mask (detached): the score to beat.
        """
        grid = self.grid_of(spec)
        keep_idx, restore_idx, mask = unstructured_mask(spec.shape[0], grid, self.mask_ratio, generator,
                                                        device=spec.device)
        pred = self.reconstruct(spec, keep_idx, restore_idx)
        target = patch_targets(spec, self.patch_size, self.decoder_cfg.norm_pix_loss)
        loss = masked_mse(pred, target, mask)
        baseline = predict_mean_score(spec, self.patch_size, mask, self.decoder_cfg.norm_pix_loss)
        return {"loss": loss, "pred": pred, "mask": mask, "baseline": baseline}

    def reconstruct(self, spec: torch.Tensor, keep_idx: torch.Tensor, restore_idx: torch.Tensor) -> torch.Tensor:
        """Predictions (B, N, p*p) for every patch from the visible ones. keep_idx (B, n_keep): patch indices
        (CLS excluded, ascending) as returned by :mod:`audiomosaic.masking`; restore_idx (B, N) its completion."""
        tokens = self.encoder.forward_features(spec, keep_idx)  # (B, 1 + n_keep, D): only visible patches
        return self.decoder(tokens, restore_idx, self.grid_of(spec))

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder's weights alone, keyed as ``AudioMosaic(cfg, projector=False)`` (no decoder, no prefix)."""
        return self.encoder.state_dict()
