"""The AASIST graph back-end over encoder tokens (EnvSDD spoof detection, docs/method.md §8, the ``_aasist`` variant).

AASIST (Jung et al., ICASSP 2022) as the authors attach it to AudioMosaic (their ``models/aasist.py`` and
``AudioMosaicAASIST`` in ``models/audiomosaic.py``): the final tokens (B, N, D) are projected to 128 and read as a
one-channel 2-D map (128 "spectral" rows x N "temporal" columns), max-pooled 3x3, passed through six residual 2-D
conv blocks, pooled by attention along each axis into a spectral graph (42 nodes) and a temporal graph (N // 3
nodes), refined by graph attention, graph pooling and two heterogeneous (spectro-temporal) GAT branches with master
nodes, and read out to 160 features -> Linear(160, 2).

Quirks of the original code kept because they change outputs:

- the residual block computes BN + SELU of its input but applies ``conv1`` to the raw input (the BN result is
  dropped; its running statistics still update in training, as in the original);
- the heterogeneous layer scores both cross-type edge directions with the same weight ``att_weight12``;
- the master node attends over the dropped-out nodes before their projection;
- graph pooling multiplies the kept nodes by their sigmoid scores and orders them by score; the two branches are
  then combined by an element-wise max over node positions, so that order matters;
- the spectral graph has exactly 42 nodes (128 // 3) plus a learned table ``pos_S``; the temporal axis is the
  token sequence itself, CLS first (``token_order="flat"``).

Parameter names: the head lives under ``aasist.`` in :class:`AudioMosaicAASIST`, so the layer-decay optimiser
(``train.optim.layer_id``: everything outside ``patch_embed``/``cls_token``/``pos_embed``/``blocks.i``) gives it
the top learning rate, as the authors' ``param_groups_lrd``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from audiomosaic.config import EncoderConfig
from audiomosaic.model import AudioMosaic
from audiomosaic.reference import rel_err
from audiomosaic.train.checkpoint import encoder_config_from_authors, load_authors_state_dict, strip_prefixes

GAT_DIMS = (64, 32)
FILTERS = ((1, 32), (32, 32), (32, 64), (64, 64), (64, 64), (64, 64))  # the six residual blocks (in, out)
POOL_RATIO = 0.5
TEMPERATURES = (2.0, 2.0, 100.0)  # GAT spectral, GAT temporal, heterogeneous layers
PROJ_DIM = 128  # tokens are projected to 128 -> 42 spectral nodes after the 3x3 max-pool
N_SPECTRAL = PROJ_DIM // 3
TOKEN_ORDERS = ("flat", "grid")


def _pairwise(x: torch.Tensor) -> torch.Tensor:
    """(B, n, d) -> (B, n, n, d) with entry [i, j] = x_i * x_j."""
    return x.unsqueeze(2) * x.unsqueeze(1)


def _bn_nodes(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm1d over every node of every example: (B, n, d) -> (B, n, d)."""
    return bn(x.reshape(-1, x.shape[-1])).reshape(x.shape)


def _xavier(*size: int) -> nn.Parameter:
    p = nn.Parameter(torch.empty(*size))
    nn.init.xavier_normal_(p)
    return p


class GraphAttention(nn.Module):
    """Homogeneous graph attention over fully connected nodes (B, n, in_dim) -> (B, n, out_dim)."""

    def __init__(self, in_dim: int, out_dim: int, temperature: float = 1.0):
        super().__init__()
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_weight = _xavier(out_dim, 1)
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.input_drop = nn.Dropout(0.2)
        self.temp = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_drop(x)
        att = torch.tanh(self.att_proj(_pairwise(x))) @ self.att_weight  # (B, n, n, 1)
        att = F.softmax(att.squeeze(-1) / self.temp, dim=-1)  # row i normalised over neighbours j
        x = self.proj_with_att(att @ x) + self.proj_without_att(x)
        return F.selu(_bn_nodes(self.bn, x))


class HeteroGraphAttention(nn.Module):
    """Heterogeneous attention over two node types plus a master node.

    ``forward(x1 (B, n1, in), x2 (B, n2, in), master (B or 1, 1, in))`` -> (x1 (B, n1, out), x2 (B, n2, out),
    master (B, 1, out)).
    """

    def __init__(self, in_dim: int, out_dim: int, temperature: float = 1.0):
        super().__init__()
        self.proj_type1 = nn.Linear(in_dim, in_dim)
        self.proj_type2 = nn.Linear(in_dim, in_dim)
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_projM = nn.Linear(in_dim, out_dim)
        # Registration order = the authors' state-dict order.
        self.att_weight11, self.att_weight22 = _xavier(out_dim, 1), _xavier(out_dim, 1)
        self.att_weight12, self.att_weightM = _xavier(out_dim, 1), _xavier(out_dim, 1)
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.proj_with_attM = nn.Linear(in_dim, out_dim)
        self.proj_without_attM = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.input_drop = nn.Dropout(0.2)
        self.temp = temperature

    def _edge_scores(self, x: torch.Tensor, n1: int) -> torch.Tensor:
        """(B, n, in) -> (B, n, n) attention, each type pair scored by its own vector (12 serves both ways)."""
        h = torch.tanh(self.att_proj(_pairwise(x)))  # (B, n, n, out)
        t = torch.arange(x.shape[1], device=x.device) >= n1  # node type: False = type 1, True = type 2
        same1 = (~t[:, None] & ~t[None, :])
        same2 = (t[:, None] & t[None, :])
        s = torch.where(same1, (h @ self.att_weight11).squeeze(-1),
                        torch.where(same2, (h @ self.att_weight22).squeeze(-1), (h @ self.att_weight12).squeeze(-1)))
        return F.softmax(s / self.temp, dim=-1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, master: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n1, n2 = x1.shape[1], x2.shape[1]
        x = self.input_drop(torch.cat([self.proj_type1(x1), self.proj_type2(x2)], dim=1))  # (B, n1 + n2, in)
        att = self._edge_scores(x, n1)
        # Master node: attends over the (dropped-out, unprojected) nodes, before they are updated.
        m_att = torch.tanh(self.att_projM(x * master)) @ self.att_weightM  # (B, n, 1)
        m_att = F.softmax(m_att / self.temp, dim=-2)
        master = self.proj_with_attM(m_att.transpose(1, 2) @ x) + self.proj_without_attM(master)  # (B, 1, out)
        x = self.proj_with_att(att @ x) + self.proj_without_att(x)
        x = F.selu(_bn_nodes(self.bn, x))
        return x[:, :n1], x[:, n1:n1 + n2], master


class GraphPool(nn.Module):
    """Keep the top ``ratio`` of nodes by a sigmoid score, scaled by it, ordered by decreasing score."""

    def __init__(self, ratio: float, in_dim: int, p: float = 0.3):
        super().__init__()
        self.ratio = ratio
        self.proj = nn.Linear(in_dim, 1)
        self.drop = nn.Dropout(p) if p > 0 else nn.Identity()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(B, n, d) -> (B, max(int(n * ratio), 1), d)."""
        scores = torch.sigmoid(self.proj(self.drop(h)))  # (B, n, 1)
        k = max(int(h.shape[1] * self.ratio), 1)
        idx = torch.topk(scores, k, dim=1).indices.expand(-1, -1, h.shape[-1])
        return torch.gather(h * scores, 1, idx)


class ResidualBlock(nn.Module):
    """RawNet2-style 2-D residual block; keeps (H, W): conv (2, 3) pad (1, 1) then (2, 3) pad (0, 1)."""

    def __init__(self, c_in: int, c_out: int, first: bool = False):
        super().__init__()
        self.bn1 = None if first else nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, kernel_size=(2, 3), padding=(1, 1))
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, kernel_size=(2, 3), padding=(0, 1))
        self.conv_downsample = nn.Conv2d(c_in, c_out, kernel_size=(1, 3), padding=(0, 1)) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bn1 is not None and self.training:
            with torch.no_grad():  # the original computes bn1(x) and drops it: only its running statistics move
                self.bn1(x)
        out = self.conv2(F.selu(self.bn2(self.conv1(x))))  # quirk: conv1 reads the raw input
        return out + (x if self.conv_downsample is None else self.conv_downsample(x))


class AASISTHead(nn.Module):
    """AASIST back-end: tokens (B, N, D) -> logits (B, 2).

    Args:
        embed_dim: token width D.
        token_order: ``flat`` (the authors): the token sequence as given (CLS first, time-major patches
            1 + t * n_freq + f) is the temporal axis. ``grid``: the CLS token is dropped, the patch tokens are
            read as an explicit (n_time, n_freq) grid and averaged over frequency after the projection, so the
            temporal nodes are true time columns (a choice of this kit; same parameters).
        grid: (n_time, n_freq) of the patch grid, needed by ``grid`` when the tokens come flat.
    """

    def __init__(self, embed_dim: int, token_order: str = "flat", grid: tuple[int, int] | None = None):
        super().__init__()
        if token_order not in TOKEN_ORDERS:
            raise ValueError(f"token_order must be one of {TOKEN_ORDERS}, got {token_order!r}")
        self.token_order, self.grid = token_order, grid
        g0, g1 = GAT_DIMS
        self.proj = nn.Linear(embed_dim, PROJ_DIM)
        self.bn_in = nn.BatchNorm2d(1)
        self.bn_out = nn.BatchNorm2d(FILTERS[-1][1])
        self.res = nn.ModuleList([ResidualBlock(a, b, first=i == 0) for i, (a, b) in enumerate(FILTERS)])
        c = FILTERS[-1][1]
        self.attention = nn.Sequential(nn.Conv2d(c, 128, 1), nn.SELU(), nn.BatchNorm2d(128), nn.Conv2d(128, c, 1))
        self.pos_S = nn.Parameter(torch.randn(1, N_SPECTRAL, c))
        self.master1 = nn.Parameter(torch.randn(1, 1, g0))
        self.master2 = nn.Parameter(torch.randn(1, 1, g0))
        self.GAT_layer_S = GraphAttention(c, g0, TEMPERATURES[0])
        self.GAT_layer_T = GraphAttention(c, g0, TEMPERATURES[1])
        for name, d_in in (("HtrgGAT_layer_ST11", g0), ("HtrgGAT_layer_ST12", g1), ("HtrgGAT_layer_ST21", g0),
                           ("HtrgGAT_layer_ST22", g1)):
            setattr(self, name, HeteroGraphAttention(d_in, g1, TEMPERATURES[2]))
        for name, d in (("pool_S", g0), ("pool_T", g0), ("pool_hS1", g1), ("pool_hT1", g1), ("pool_hS2", g1),
                        ("pool_hT2", g1)):
            setattr(self, name, GraphPool(POOL_RATIO, d))
        self.drop_way = nn.Dropout(0.2)
        self.drop = nn.Dropout(0.5)
        self.out_layer = nn.Linear(5 * g1, 2)

    def _time_major(self, tokens: torch.Tensor, grid: tuple[int, int] | None) -> torch.Tensor:
        """(B, N, D) or (B, T, F, D) -> projected (B, n_nodes, 128) along the head's temporal axis."""
        if self.token_order == "flat":
            if tokens.ndim != 3:
                raise ValueError(f"token_order='flat' takes (B, N, D) tokens, got shape {tuple(tokens.shape)}")
            return self.proj(tokens)
        if tokens.ndim == 3:
            t, f = grid or self.grid or (0, 0)
            if t * f not in (tokens.shape[1], tokens.shape[1] - 1):
                raise ValueError(f"token_order='grid' needs tokens of a full {(t, f)} grid (+ CLS), "
                                 f"got {tokens.shape[1]} tokens")
            tokens = tokens[:, -t * f:].reshape(tokens.shape[0], t, f, -1)  # (B, T, F, D), CLS dropped
        return self.proj(tokens).mean(dim=2)  # (B, T, 128): one temporal node per time column

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """Tokens (B, N, D) [or (B, T, F, D) with ``grid`` order] -> logits (B, 2)."""
        x = self._time_major(tokens, grid).transpose(1, 2).unsqueeze(1)  # (B, 1, 128, n)
        x = F.selu(self.bn_in(F.max_pool2d(x, (3, 3))))  # (B, 1, 42, n // 3)
        for blk in self.res:
            x = blk(x)  # (B, 64, 42, n // 3)
        x = F.selu(self.bn_out(x))
        w = self.attention(x)
        e_s = (x * F.softmax(w, dim=-1)).sum(dim=-1).transpose(1, 2) + self.pos_S  # (B, 42, 64) spectral nodes
        e_t = (x * F.softmax(w, dim=-2)).sum(dim=-2).transpose(1, 2)  # (B, n // 3, 64) temporal nodes
        out_s = self.pool_S(self.GAT_layer_S(e_s))
        out_t = self.pool_T(self.GAT_layer_T(e_t))
        branches = []
        for first, second, pool_s, pool_t, master in (
                (self.HtrgGAT_layer_ST11, self.HtrgGAT_layer_ST12, self.pool_hS1, self.pool_hT1, self.master1),
                (self.HtrgGAT_layer_ST21, self.HtrgGAT_layer_ST22, self.pool_hS2, self.pool_hT2, self.master2)):
            t1, s1, m1 = first(out_t, out_s, master)
            s1, t1 = pool_s(s1), pool_t(t1)
            t_aug, s_aug, m_aug = second(t1, s1, m1)
            branches.append((self.drop_way(t1 + t_aug), self.drop_way(s1 + s_aug), self.drop_way(m1 + m_aug)))
        (t1, s1, m1), (t2, s2, m2) = branches
        out_t, out_s, master = torch.max(t1, t2), torch.max(s1, s2), torch.max(m1, m2)  # node-position-wise
        hidden = torch.cat([out_t.abs().amax(dim=1), out_t.mean(dim=1), out_s.abs().amax(dim=1), out_s.mean(dim=1),
                            master.squeeze(1)], dim=1)  # (B, 160)
        return self.out_layer(self.drop(hidden))


class AudioMosaicAASIST(AudioMosaic):
    """AudioMosaic encoder + AASIST head (the authors' ``audiomosaic_aasist``); ``forward(spec)`` -> (B, 2).

    ``fc_norm`` exists (so pre-trained and the authors' fine-tuned weights load strictly) but is unused, as in the
    original. ``shuffle_train_tokens`` reproduces the authors' training-mode ``random_masking_2d`` with zero
    ratios, which still permutes the time columns and frequency rows of every example (it matters only for this
    order-sensitive head); it needs the full grid and is skipped when ``keep_idx`` masks tokens.
    """

    def __init__(self, cfg: EncoderConfig, token_order: str = "flat", shuffle_train_tokens: bool = True):
        super().__init__(cfg, num_classes=0, projector=False)
        self.aasist = AASISTHead(cfg.embed_dim, token_order, self.grid)
        self.shuffle_train_tokens = shuffle_train_tokens

    def embed_tokens(self, spec: torch.Tensor, keep_idx: torch.Tensor | None = None) -> torch.Tensor:
        x = super().embed_tokens(spec, keep_idx)
        if not (self.training and self.shuffle_train_tokens and keep_idx is None):
            return x
        b, d = x.shape[0], x.shape[-1]
        t, f = spec.shape[2] // self.cfg.patch_size, spec.shape[3] // self.cfg.patch_size
        pt = torch.rand(b, t, device=x.device).argsort(dim=1)  # (B, T) time-column order
        pf = torch.rand(b, f, device=x.device).argsort(dim=1)  # (B, F) frequency-row order
        idx = (pt[:, :, None] * f + pf[:, None, :]).reshape(b, t * f)  # (B, T*F) time-major
        patches = torch.gather(x[:, 1:], 1, idx[..., None].expand(-1, -1, d))
        return torch.cat([x[:, :1], patches], dim=1)

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, N, D) -> logits (B, 2); ``pre_logits`` returns the pooled, normalised features instead."""
        return super().forward_head(tokens, pre_logits=True) if pre_logits else self.aasist(tokens)

    def forward(self, spec: torch.Tensor, keep_idx: torch.Tensor | None = None) -> torch.Tensor:
        return self.aasist(self.forward_features(spec, keep_idx))


# ---------------------------------------------------------------------------------------------- authors' keys

_RENAMES = (("LL.", "proj."), ("first_bn1.", "bn_out."), ("first_bn.", "bn_in."))
_AUTHORS_HEAD = ("LL.", "first_bn", "encoder.", "attention.", "pos_S", "master1", "master2", "GAT_layer_",
                 "HtrgGAT_layer_", "pool_", "out_layer.")


def aasist_key_from_authors(key: str) -> str | None:
    """An authors' back-end key -> ours under ``aasist.``; None for encoder keys (left to the ViT converter)."""
    if not key.startswith(_AUTHORS_HEAD):
        return None
    if key.startswith("encoder."):  # encoder.N.0.<rest> (Sequential of one block) -> res.N.<rest>
        i, _, rest = key[len("encoder."):].split(".", 2)
        return f"aasist.res.{i}.{rest}"
    for old, new in _RENAMES:
        if key.startswith(old):
            return "aasist." + new + key[len(old):]
    return "aasist." + key


def convert_authors_aasist(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The authors' ``AudioMosaicAASIST`` state dict -> ours (back-end renamed, encoder keys unchanged).

    timm's default ``head`` (a 1000-way Linear the authors' class inherits and never uses) is dropped.
    """

    out = {}
    for k, v in strip_prefixes(state_dict).items():
        if k.startswith("head."):
            continue
        out[aasist_key_from_authors(k) or k] = v
    return out


def load_authors_aasist(model: AudioMosaicAASIST, state_dict: Mapping[str, torch.Tensor], strict: bool = True
                        ) -> tuple[list[str], list[str]]:
    """Load an authors' AASIST (or our) state dict; encoder keys go through the ViT converter (pos resize)."""

    return load_authors_state_dict(model, convert_authors_aasist(state_dict), strict=strict)


# ------------------------------------------------------------------------------------------------ verification

FIXTURE_FORMAT = "audiomosaic-aasist-fixture-v1"
_ENCODER_KEYS = ("spec_size", "patch_size", "depth", "embed_dim", "num_heads", "mlp_ratio", "qkv_bias", "proj_bias",
                 "pre_norm", "pos_trainable", "drop_path_rate")


def load_aasist_fixture(path: str | Path) -> dict[str, Any]:
    """Read ``reference_aasist.pt`` (weights only); ValueError when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"fixture {path} does not exist")
    fx = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(fx, dict) or fx.get("format") != FIXTURE_FORMAT:
        raise ValueError(f"{path} is not an AASIST fixture (format {FIXTURE_FORMAT!r})")
    return fx


def model_from_fixture(fx: Mapping[str, Any], token_order: str = "flat") -> AudioMosaicAASIST:
    """Build the fixture's model and load its state dict strictly (eval mode)."""

    cfg = encoder_config_from_authors({k: v for k, v in fx["config"].items() if k in _ENCODER_KEYS})
    model = AudioMosaicAASIST(cfg, token_order=token_order)
    load_authors_aasist(model, fx["state_dict"], strict=True)
    return model.eval()


@torch.no_grad()
def verify_aasist(path: str | Path) -> dict[str, float]:
    """Max relative error (max|out - ref| / max|ref|) of the tokens and logits recomputed from the fixture."""

    fx = load_aasist_fixture(path)
    model = model_from_fixture(fx)
    spec = fx["input"].float()
    tokens = model.forward_features(spec)
    return {"tokens": rel_err(tokens, fx["tokens"]), "logits": rel_err(model.aasist(tokens), fx["logits"])}
