"""The AudioMosaic encoder (docs/method.md §4): a ViT over 16x16 patches of a (B, 1, T, F) log-mel spectrogram.

State-dict keys follow timm's VisionTransformer naming used by the authors (``cls_token``, ``pos_embed``,
``patch_embed.proj``, ``patch_embed.norm``, ``norm_pre``, ``blocks.i.*``, ``fc_norm``, ``projector.*``, ``head``),
so the authors' checkpoints load without renaming (see ``checkpoint.py`` for prefixes).

Model contract (timm-like): ``forward_features(spec, keep_idx)`` -> tokens, ``forward_intermediates`` -> every
block's tokens, ``pool`` -> mean over all tokens (CLS included), ``forward_head(tokens, pre_logits)``,
``project`` -> the contrastive embedding.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from audiomosaic.config import EncoderConfig, apply_overrides, encoder_config
from audiomosaic.masking import gather_tokens
from audiomosaic.pos_embed import resize_pos_embed, sincos_2d

LN_EPS = 1e-6  # every encoder LayerNorm (timm partial(nn.LayerNorm, eps=1e-6))


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero a residual branch per example with probability p, rescale the rest."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty(x.shape[0], *([1] * (x.ndim - 1))).bernoulli_(1.0 - p)
    return x * keep / (1.0 - p)


class PatchEmbed(nn.Module):
    """(B, 1, T, F) -> (B, n, D) time-major tokens (k = t * n_freq + f), then LayerNorm.

    The weights are the authors' ``Conv2d`` (keys ``proj.weight`` (D, 1, p, p), ``proj.bias``), applied as a Linear
    on each patch's p*p pixels: a stride-p, p x p convolution is exactly that product. As a Linear it can project
    only the visible patches (``keep_idx``), so masked patches cost neither the projection nor the LayerNorm.
    """

    def __init__(self, spec_size: tuple[int, int], patch_size: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.grid = (spec_size[0] // patch_size, spec_size[1] // patch_size)  # (n_time, n_freq)
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim, eps=LN_EPS)  # the authors' patch embed normalises its output

    def patchify(self, spec: torch.Tensor) -> torch.Tensor:
        """(B, 1, T, F) -> (B, n_time * n_freq, p * p) pixels, time-major, each patch flattened (time, freq)."""
        if spec.ndim != 4 or spec.shape[1] != 1:
            raise ValueError(f"spectrogram must be (B, 1, T, F), got shape {tuple(spec.shape)}")
        p = self.patch_size
        b, _, t, f = spec.shape
        if t % p or f % p:
            raise ValueError(f"spectrogram (T, F)={(t, f)} must be divisible by patch size {p}")
        x = spec.reshape(b, t // p, p, f // p, p)  # (B, n_time, p_t, n_freq, p_f)
        return x.permute(0, 1, 3, 2, 4).reshape(b, (t // p) * (f // p), p * p)  # same order as the conv kernel

    def forward(self, spec: torch.Tensor, keep_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens (B, N, D), or (B, n_keep, D) of the patches in ``keep_idx`` (B, n_keep) when given."""
        x = self.patchify(spec)  # (B, N, p*p)
        if keep_idx is not None:
            x = gather_tokens(x, keep_idx)  # (B, n_keep, p*p): project the visible patches only
        w = self.proj.weight.reshape(self.proj.out_channels, -1)  # (D, p*p), a view of the conv kernel
        return self.norm(F.linear(x, w, self.proj.bias))


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, H, N, d_head), scale 1/sqrt(d_head)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU, as timm


class Block(nn.Module):
    """Pre-norm transformer block. ``ckpt`` = "attn" or "mlp" recomputes that branch in backward."""

    def __init__(self, cfg: EncoderConfig, drop_path_rate: float):
        super().__init__()
        d = cfg.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=LN_EPS)
        self.attn = Attention(d, cfg.num_heads, cfg.qkv_bias, cfg.proj_bias)
        self.norm2 = nn.LayerNorm(d, eps=LN_EPS)
        self.mlp = Mlp(d, int(d * cfg.mlp_ratio), bias=cfg.proj_bias)
        self.drop_path_rate = drop_path_rate

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.norm1(x))

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm2(x))

    def forward(self, x: torch.Tensor, ckpt: str = "") -> torch.Tensor:
        x = x + drop_path(_maybe_checkpoint(self._attn, x, ckpt == "attn"), self.drop_path_rate, self.training)
        return x + drop_path(_maybe_checkpoint(self._mlp, x, ckpt == "mlp"), self.drop_path_rate, self.training)


def _maybe_checkpoint(fn, x: torch.Tensor, enabled: bool) -> torch.Tensor:
    return checkpoint(fn, x, use_reentrant=False) if enabled else fn(x)


# Selective checkpointing ("matmul" policy): keep the outputs of the matrix products and of attention (the FLOPs),
# recompute everything else in backward (LayerNorms, GELU, dtype casts, residual adds, reshapes: memory-bound).
_SAVE_OPS = {getattr(torch.ops.aten, name).default for name in (
    "mm", "addmm", "bmm", "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu")
    if hasattr(torch.ops.aten, name)}  # attention back ends vary between torch versions


def _save_matmul_policy(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _SAVE_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def _save_matmul_context():
    return create_selective_checkpoint_contexts(_save_matmul_policy)


def build_projector(dim: int, hidden: int, out: int) -> nn.Sequential:
    """Linear -> BN -> ReLU -> Linear -> BN(bias frozen at 0), keys projector.{0,1,3,4} (docs/method.md §4)."""
    proj = nn.Sequential(nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out, bias=False), nn.BatchNorm1d(out))
    proj[4].bias.requires_grad_(False)  # SimCLR-v2 style: the final BN has a learnable scale only
    return proj


class AudioMosaic(nn.Module):
    """Encoder + ``fc_norm`` + optional projector (pre-training) and/or linear head (classification).

    Args:
        cfg: encoder configuration (sizes, biases, drop path, checkpointing fraction).
        num_classes: > 0 adds a linear ``head`` on the pooled, normalised features.
        projector: add the contrastive projector (pre-training layout).
    """

    def __init__(self, cfg: EncoderConfig, num_classes: int = 0, projector: bool = True):
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.spec_size, cfg.patch_size, d)
        self.grid = self.patch_embed.grid
        n = self.grid[0] * self.grid[1]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + n, d), requires_grad=cfg.pos_trainable)
        self.norm_pre = nn.LayerNorm(d, eps=LN_EPS) if cfg.pre_norm else nn.Identity()
        rates = torch.linspace(0, cfg.drop_path_rate, cfg.depth).tolist()
        self.blocks = nn.ModuleList([Block(cfg, r) for r in rates])
        self.n_ckpt = int(cfg.depth * cfg.grad_ckpt_fraction)  # the first n_ckpt blocks recompute in backward
        self.fc_norm = nn.LayerNorm(d, eps=LN_EPS)
        self.projector = build_projector(d, cfg.projector_hidden, cfg.projector_out) if projector else None
        self.head = nn.Linear(d, num_classes) if num_classes > 0 else None
        self.init_weights()

    # ---------------------------------------------------------------------------------------------- init
    def init_weights(self) -> None:
        grid = self.grid if self.cfg.sincos_layout == "paper" else self.grid[::-1]  # reference: the code's (F, T)
        self.pos_embed.data.copy_(sincos_2d(self.cfg.embed_dim, grid)[None])
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.LayerNorm, nn.BatchNorm1d)):
                nn.init.ones_(m.weight), nn.init.zeros_(m.bias)
        if self.head is not None:
            nn.init.normal_(self.head.weight, std=2.5e-5)

    def no_weight_decay(self) -> set[str]:
        return {"cls_token", "pos_embed"}

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    # ------------------------------------------------------------------------------------------ features
    def embed_tokens(self, spec: torch.Tensor, keep_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Patch-embed the visible patches, add positions, prepend CLS, norm_pre -> (B, 1 + n_keep, D).

        Masking before the projection equals projecting every patch and then dropping tokens (every op up to
        ``norm_pre`` is per token): masked tokens never enter the encoder, MAE-style.
        """
        x = self.patch_embed(spec, keep_idx)  # (B, n_keep, D)
        grid = (spec.shape[2] // self.cfg.patch_size, spec.shape[3] // self.cfg.patch_size)
        pos = resize_pos_embed(self.pos_embed, self.grid, grid)  # no-op at the trained size
        x = x + (pos[:, 1:] if keep_idx is None else pos[0, 1:][keep_idx])  # (B, n_keep, D)
        cls = (self.cls_token + pos[:, :1]).expand(x.shape[0], -1, -1)
        return self.norm_pre(torch.cat([cls, x], dim=1))

    def _run_block(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Block i, recomputed in backward per ``grad_ckpt_policy`` if it is among the first ``n_ckpt``."""
        policy = self.cfg.grad_ckpt_policy
        if not (i < self.n_ckpt and self.training and torch.is_grad_enabled()):
            return self.blocks[i](x)
        if policy == "block":
            return checkpoint(self.blocks[i], x, use_reentrant=False)
        if policy == "matmul":
            return checkpoint(self.blocks[i], x, use_reentrant=False, context_fn=_save_matmul_context)
        return self.blocks[i](x, ckpt=policy)  # "attn" / "mlp": one branch

    def forward_features(self, spec: torch.Tensor, keep_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Final tokens (B, 1 + n_keep, D), CLS first. There is no final norm (``use_fc_norm``)."""
        x = self.embed_tokens(spec, keep_idx)
        for i in range(len(self.blocks)):
            x = self._run_block(i, x)
        return x

    def forward_intermediates(self, spec: torch.Tensor, layers: list[int] | None = None,
                              keep_idx: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Tokens after each block in ``layers`` (default: all), each (B, 1 + n_keep, D).

        Stops after the deepest requested block, so probing a shallow layer is cheap.
        """
        depth = len(self.blocks)
        layers = list(range(depth)) if layers is None else [l % depth for l in layers]
        x, out = self.embed_tokens(spec, keep_idx), {}
        for i in range(max(layers) + 1):
            x = self._run_block(i, x)
            if i in layers:
                out[i] = x
        return [out[i] for i in layers]

    @staticmethod
    def pool(tokens: torch.Tensor) -> torch.Tensor:
        """Mean over every token, CLS included (docs/method.md §4, ``pooling: avg``). (B, N, D) -> (B, D)."""
        return tokens.mean(dim=1)

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.fc_norm(self.pool(tokens))
        if pre_logits or self.head is None:
            return x
        return self.head(x)

    def project(self, spec: torch.Tensor, keep_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Contrastive embedding z (B, projector_out), before L2 normalisation."""
        if self.projector is None:
            raise ValueError("this model was built without a projector (projector=False)")
        return self.projector(self.forward_head(self.forward_features(spec, keep_idx), pre_logits=True))

    def forward(self, spec: torch.Tensor, keep_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Logits if the model has a head, else the projection."""
        if self.head is not None:
            return self.forward_head(self.forward_features(spec, keep_idx))
        return self.project(spec, keep_idx)


def create_model(name: str | EncoderConfig = "vit_base", num_classes: int = 0, projector: bool = True,
                 **overrides) -> AudioMosaic:
    """Build a model from a preset name (``vit_tiny``, ``small``, ...) or an EncoderConfig, with overrides.

    Example: ``create_model("vit_tiny", spec_size=(512, 128), num_classes=50, projector=False)``.
    """
    cfg = name if isinstance(name, EncoderConfig) else encoder_config(name)
    if overrides:

        cfg = apply_overrides(cfg, overrides)
    return AudioMosaic(cfg, num_classes=num_classes, projector=projector)


def param_count(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def flops_per_clip(cfg: EncoderConfig, n_tokens: int) -> float:
    """Forward FLOPs (2 x multiply-adds) of one sequence of ``n_tokens`` (CLS included) through the encoder.

    Per block, with N tokens of width D and MLP ratio r: qkv + out projections 4 N D^2 MACs, MLP 2 r N D^2 MACs,
    attention scores and weighted sum 2 N^2 D MACs. The patch embedding adds N D p^2 MACs. A training step
    (forward + backward) costs about 3x this. Used by the benchmarks to report model TFLOP/s and MFU.
    """
    d, n, r = cfg.embed_dim, n_tokens, cfg.mlp_ratio
    per_block = 2 * (4 * n * d * d + 2 * r * n * d * d + 2 * n * n * d)
    patch = 2 * n * d * cfg.patch_size ** 2
    return float(cfg.depth * per_block + patch)


def train_flops_per_clip(cfg: EncoderConfig, tokens_per_view: list[int] | tuple[int, ...]) -> float:
    """Model FLOPs of one pre-training step per clip: 3x the forward (backward = 2x), per view its visible
    tokens + CLS. The projector and NT-Xent are < 0.01% and left out; checkpoint recomputation is not counted.
    ViT-B at 1024x128 with the paper layout (200 + 256 tokens): 246 GFLOP.
    """
    return 3.0 * sum(flops_per_clip(cfg, n + 1) for n in tokens_per_view)
