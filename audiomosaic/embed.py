"""Embedding API: ``audiomosaic.load(path)`` -> :class:`Embedder`, whose ``embed`` takes audio of any length.

Audio is cut into windows of the trained input length (``frontend.target_frames`` frames of 10 ms, e.g. 10.24 s
for 1024 frames), with a hop of one window unless asked otherwise; the last window is zero-padded (in the log-mel
domain, exactly as training pads short clips). Each window gives the pooled, ``fc_norm``-ed representation
(docs/method.md §4), or the token mean of one block's output with ``layer``; a clip's embedding is the mean over its
windows.

The HEAR 2021 API (``load_model``, ``get_scene_embeddings``, ``get_timestamp_embeddings``; ``audiomosaic.hear`` is
the module to name in hear-validator / hear-eval-kit) wraps the same :class:`Embedder`, a ``torch.nn.Module``:

- scene embeddings are ``embed``'s clip embeddings;
- timestamp embeddings come from windows tiled without overlap (whatever ``hop_seconds``): each patch column (160 ms)
  gives the mean of its n_freq tokens (time-major, docs/method.md §4), and these column features are linearly
  interpolated, then ``fc_norm``-ed, at the centres of ``timestamp_hop_ms`` segments: (j + 0.5) * hop for every
  j with a centre inside the clip. The cost is that of the scene embeddings (one forward pass per window); the
  time resolution underneath stays one column (160 ms), and the finer grid only meets HEAR's <= 50 ms hop. Sliding
  one window per timestamp instead would cost window / hop forward passes per window (205 for 10.24 s at 50 ms).

CLI: ``python -m audiomosaic embed FILES... --checkpoint PATH --out emb.npy`` writes an (n_files, D) array and
``emb.json`` with the file names.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from audiomosaic.config import FrontendConfig, from_dict
from audiomosaic.frontend import fbank_batch, num_frames, resample, to_mono
from audiomosaic.model import AudioMosaic
from audiomosaic.train.checkpoint import load_any

Audio = torch.Tensor | np.ndarray
TIMESTAMP_HOP_MS = 50.0  # HEAR asks for <= 50 ms (its tolerance for onsets in music transcription)


def _resolve_device(name: str | torch.device) -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else
                        ("cpu" if name == "auto" else name))


def frontend_from_checkpoint(path: str | Path, model: AudioMosaic) -> FrontendConfig:
    """The front end a checkpoint was trained with: its sidecar/resume config if stored, else AudioSet constants
    with the encoder's input size."""
    path = Path(path)
    stored: Any = None
    if path.suffix == ".safetensors":
        side = path.with_suffix(".json")
        stored = json.loads(side.read_text()).get("frontend") if side.exists() else None
    else:
        try:  # mmap: only the small config is read from a large checkpoint
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except (RuntimeError, ValueError, OSError):  # legacy (non-zip) format cannot be memory-mapped
            obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict) and isinstance(obj.get("config"), dict):
            stored = obj["config"].get("frontend")
    if isinstance(stored, dict):
        return from_dict(FrontendConfig, stored)
    t, f = model.cfg.spec_size
    return FrontendConfig(target_frames=t, num_mel_bins=f)


def segment_centres_ms(n_samples: int, sample_rate: int, hop_ms: float) -> torch.Tensor:
    """Centres (j + 0.5) * hop of the hop-long segments whose centre lies inside the clip, in ms (float64).

    Every centre is in (0, duration) and the last one >= duration - hop; a clip no longer than hop / 2 gets one
    timestamp at its middle.
    """
    duration = n_samples * 1000.0 / sample_rate
    n = max(math.ceil(duration / hop_ms - 0.5), 0)
    while n > 0 and (n - 0.5) * hop_ms >= duration:  # float rounding when duration / hop - 0.5 is an integer
        n -= 1
    if n == 0:
        return torch.tensor([duration / 2], dtype=torch.float64)
    return (torch.arange(n, dtype=torch.float64) + 0.5) * hop_ms  # from the index, so no drift accumulates


class Embedder(nn.Module):
    """A frozen encoder plus its front end; a ``torch.nn.Module`` so that ``.to(device)`` moves it (HEAR API).

    Args:
        model: the encoder (kept in eval mode and moved to ``device``).
        frontend: normalisation constants and window length (``target_frames``).
        device: ``auto``, ``cpu``, ``cuda``, ...
        hop_seconds: hop between windows; None = one window (no overlap).
        batch_size: windows per forward pass.
        timestamp_hop_ms: spacing of :meth:`get_timestamp_embeddings`' timestamps.
        layer: None for the representation (``fc_norm`` of token means); an int for the plain token means of that
            block's output, in the HEAR functions (``embed`` takes ``layer`` per call).
    """

    def __init__(self, model: AudioMosaic, frontend: FrontendConfig, device: str = "auto",
                 hop_seconds: float | None = None, batch_size: int = 16,
                 timestamp_hop_ms: float = TIMESTAMP_HOP_MS, layer: int | None = None):
        super().__init__()
        if not timestamp_hop_ms > 0:
            raise ValueError(f"timestamp_hop_ms must be > 0, got {timestamp_hop_ms}")
        self.model = model
        self.frontend = frontend
        self.hop_seconds = hop_seconds
        self.batch_size = batch_size
        self.timestamp_hop_ms = float(timestamp_hop_ms)
        self.layer = layer
        self.sample_rate = frontend.sample_rate  # HEAR attribute names
        self.scene_embedding_size = self.timestamp_embedding_size = int(model.cfg.embed_dim)
        self.eval().to(_resolve_device(device))

    def train(self, mode: bool = True) -> Embedder:
        """Inference only: the encoder stays in eval mode (no drop path) whatever ``mode`` says."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def window_seconds(self) -> float:
        return self.frontend.target_frames * self.frontend.frame_shift_ms / 1000

    def _hop_frames(self, hop_seconds: float | None) -> int:
        hop = self.hop_seconds if hop_seconds is None else hop_seconds
        if hop is None:
            return self.frontend.target_frames
        frames = round(hop * 1000 / self.frontend.frame_shift_ms)
        if frames < 1:
            raise ValueError(f"hop_seconds={hop} is shorter than one {self.frontend.frame_shift_ms} ms frame")
        return frames

    def _windows(self, wav: torch.Tensor, hop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S) equal-length clips at the model rate -> windows (B, n, 1, T, F) and their centres (n,) in s."""
        cfg, t = self.frontend, self.frontend.target_frames
        n = num_frames(wav.shape[1], cfg)
        if n == 0:
            raise ValueError(f"waveform of {wav.shape[1]} samples is shorter than one {cfg.frame_length_ms} ms frame")
        n_win = 1 + math.ceil(max(n - t, 0) / hop)
        full = dataclasses.replace(cfg, target_frames=(n_win - 1) * hop + t)  # pads the tail like training does
        feat = fbank_batch(wav.to(self.device), full)[:, 0]  # (B, frames, F)
        win = feat.unfold(1, t, hop).transpose(2, 3)[:, :, None]  # (B, n_win, 1, T, F)
        starts = torch.arange(n_win, dtype=torch.float64) * hop
        centres = (starts + t / 2) * cfg.frame_shift_ms / 1000
        return win, centres.float()

    def _tokens(self, spec: torch.Tensor, layer: int | None) -> torch.Tensor:
        """(b, 1, T, F) -> final tokens, or block ``layer``'s, (b, 1 + n_time * n_freq, D), CLS first."""
        if layer is None:
            return self.model.forward_features(spec)
        return self.model.forward_intermediates(spec, [layer])[0]

    @torch.no_grad()
    def _encode(self, windows: torch.Tensor, layer: int | None) -> torch.Tensor:
        """(n, 1, T, F) -> (n, D) in chunks of ``batch_size``."""
        out = []
        for chunk in windows.split(self.batch_size):
            tokens = self._tokens(chunk, layer)
            out.append(self.model.forward_head(tokens, pre_logits=True) if layer is None else self.model.pool(tokens))
        return torch.cat(out).float().cpu()

    @torch.no_grad()
    def _encode_columns(self, windows: torch.Tensor, layer: int | None) -> torch.Tensor:
        """(n, 1, T, F) -> (n, n_time, D): per patch column, the mean of its n_freq tokens (no fc_norm)."""
        p = self.model.cfg.patch_size
        n_time, n_freq = windows.shape[-2] // p, windows.shape[-1] // p
        out = []
        for chunk in windows.split(self.batch_size):
            tokens = self._tokens(chunk, layer)[:, 1:]  # (b, n_time * n_freq, D), time-major
            out.append(tokens.reshape(len(chunk), n_time, n_freq, -1).mean(2))  # (b, n_time, D)
        return torch.cat(out)

    def _as_clips(self, waveform: Audio | Sequence[Audio],
                  sample_rate: int) -> tuple[torch.Tensor | list[torch.Tensor], bool]:
        """Normalise the input to mono clips at the model rate: one (B, S) tensor when the lengths are equal by
        construction (a 1-D clip or a 2-D batch), else a list of (S,); also say whether it was a batch."""
        if isinstance(waveform, (list, tuple)):
            return [resample(to_mono(w).float(), sample_rate, self.sample_rate) for w in waveform], True
        w = torch.as_tensor(np.asarray(waveform) if isinstance(waveform, np.ndarray) else waveform).float()
        if w.ndim not in (1, 2):
            raise ValueError(f"waveform must be (S,) or a (B, S) batch, got shape {tuple(w.shape)}")
        return resample(w if w.ndim == 2 else w[None], sample_rate, self.sample_rate), w.ndim == 2

    def embed(self, waveform: Audio | Sequence[Audio], sample_rate: int, hop_seconds: float | None = None,
              layer: int | None = None) -> dict[str, Any]:
        """Embed one clip, a (B, S) batch, or a list of clips of any lengths, rates converted from ``sample_rate``.

        Args:
            waveform: (S,) clip, (B, S) batch, or a list of (S,) / (C, S) clips (channels are averaged).
            sample_rate: rate of the input; it is resampled to the model's rate.
            hop_seconds: hop between windows (None: the embedder's default, one window).
            layer: None for the model's representation (mean of all tokens, CLS included, then fc_norm);
                an int for the plain token mean of that block's output (0-indexed, -1 = last).
        Returns:
            ``embedding`` (D,) or (B, D): mean over windows; ``window_embeddings`` (n, D) per clip and
            ``timestamps`` (n,) window centres in seconds, as tensors for one clip and lists for a batch.
        """
        clips, batched = self._as_clips(waveform, sample_rate)
        hop = self._hop_frames(hop_seconds)
        groups = [clips] if isinstance(clips, torch.Tensor) else [c[None] for c in clips]  # (b, S) each
        per_clip = []
        for g in groups:  # a 2-D batch goes through the front end in one pass
            win, ts = self._windows(g, hop)
            per_clip += [(w, ts) for w in win]
        emb = self._encode(torch.cat([w for w, _ in per_clip]), layer)  # every window of every clip at once
        win_emb = list(emb.split([len(ts) for _, ts in per_clip]))
        times = [ts for _, ts in per_clip]
        scene = torch.stack([e.mean(0) for e in win_emb])  # (B, D)
        if not batched:
            return {"embedding": scene[0], "window_embeddings": win_emb[0], "timestamps": times[0]}
        return {"embedding": scene, "window_embeddings": win_emb, "timestamps": times}

    # ----------------------------------------------------------------------------------------- HEAR 2021 API
    def _hear_audio(self, audio: Audio) -> torch.Tensor:
        """Check a HEAR batch: 2-D (n_sounds, n_samples), floating point, at ``sample_rate`` -> float32."""
        audio = torch.as_tensor(audio)
        if audio.ndim != 2:
            raise ValueError(f"HEAR audio must be a 2-D (n_sounds, n_samples) batch at {self.sample_rate} Hz, got "
                             f"shape {tuple(audio.shape)}; pass one clip as audio[None]")
        if not audio.is_floating_point():
            raise ValueError(f"HEAR audio must be floating point in [-1, 1], got {audio.dtype} (scale integer PCM "
                             f"first, e.g. int16 / 32768)")
        return audio.float()

    def forward(self, audio: Audio) -> torch.Tensor:
        return self.get_scene_embeddings(audio)

    @torch.no_grad()
    def get_scene_embeddings(self, audio: Audio) -> torch.Tensor:
        """HEAR: (n_sounds, n_samples) audio at ``sample_rate`` -> (n_sounds, scene_embedding_size) float32 (CPU)."""
        audio = self._hear_audio(audio)
        if len(audio) == 0:
            return torch.zeros(0, self.scene_embedding_size)
        return self.embed(audio, self.sample_rate, layer=self.layer)["embedding"]

    @torch.no_grad()
    def get_timestamp_embeddings(self, audio: Audio) -> tuple[torch.Tensor, torch.Tensor]:
        """HEAR: (n_sounds, n_samples) audio -> embeddings (n_sounds, n_t, D) float32 and timestamps (n_sounds, n_t)
        in ms, both on CPU: column features interpolated at ``timestamp_hop_ms`` segment centres (module docstring).
        """
        audio = self._hear_audio(audio)
        cfg, p = self.frontend, self.model.cfg.patch_size
        times = segment_centres_ms(audio.shape[1], self.sample_rate, self.timestamp_hop_ms)  # (n_t,) float64
        if len(audio) == 0:
            return torch.zeros(0, len(times), self.timestamp_embedding_size), torch.zeros(0, len(times))
        win, _ = self._windows(audio, cfg.target_frames)  # (B, n_win, 1, T, F): tiled, so columns are contiguous
        b = win.shape[0]
        cols = self._encode_columns(win.flatten(0, 1), self.layer)  # (B * n_win, n_time, D)
        cols = cols.reshape(b, -1, cols.shape[-1])  # (B, n_win * n_time, D) in time order
        n_cols = math.ceil(num_frames(audio.shape[1], cfg) / p)  # columns holding at least one real frame
        # Column k holds frames 16k..16k+15; frame i is centred at i * shift + length / 2.
        first_ms = (p - 1) / 2 * cfg.frame_shift_ms + cfg.frame_length_ms / 2
        pos = ((times - first_ms) / (p * cfg.frame_shift_ms)).clamp(0, n_cols - 1)  # fractional column index
        lo = pos.floor().long()
        hi = (lo + 1).clamp(max=n_cols - 1)
        w = (pos - lo).to(cols)[None, :, None]  # (1, n_t, 1) on the columns' device
        lo, hi = lo.to(cols.device), hi.to(cols.device)
        emb = cols[:, lo] * (1 - w) + cols[:, hi] * w  # (B, n_t, D)
        if self.layer is None:
            emb = self.model.fc_norm(emb)
        return emb.float().cpu(), times.float()[None].expand(b, -1).contiguous()


def load(path: str | Path, device: str = "auto", frontend: FrontendConfig | None = None,
         hop_seconds: float | None = None, batch_size: int = 16, timestamp_hop_ms: float = TIMESTAMP_HOP_MS,
         layer: int | None = None) -> Embedder:
    """Load an encoder for embedding: our safetensors export, a resume checkpoint, or the authors' ``.pt``.

    Args:
        path: checkpoint file (see :func:`audiomosaic.train.checkpoint.load_any`).
        device: ``auto`` picks CUDA when available.
        frontend: override the stored front end (normalisation constants, window length in frames).
        hop_seconds: default hop between windows (None = one window).
        batch_size: windows per forward pass.
        timestamp_hop_ms: spacing of the HEAR timestamp embeddings.
        layer: block whose token means the HEAR functions return (None = the representation).
    """
    model = load_any(path)
    return Embedder(model, frontend or frontend_from_checkpoint(path, model), device, hop_seconds, batch_size,
                    timestamp_hop_ms, layer)


# HEAR 2021 module-level API (https://hearbenchmark.com/hear-api.html); audiomosaic.hear re-exports these.
def load_model(model_file_path: str = "", device: str = "auto", timestamp_hop_ms: float = TIMESTAMP_HOP_MS,
               layer: int | None = None, batch_size: int = 16) -> Embedder:
    """HEAR: a checkpoint path -> :class:`Embedder` (a ``torch.nn.Module`` with ``sample_rate``,
    ``scene_embedding_size``, ``timestamp_embedding_size``). Keyword arguments are hear-eval-kit ``--model-options``.
    """
    if not model_file_path:
        raise ValueError("load_model needs a checkpoint: pass the path of an encoder .safetensors export (with its "
                         ".json sidecar), a resume checkpoint or the authors' .pt, e.g. hear-validator "
                         "audiomosaic.hear --model runs/<run>/encoder.safetensors")
    return load(model_file_path, device=device, batch_size=batch_size, timestamp_hop_ms=timestamp_hop_ms, layer=layer)


def get_scene_embeddings(audio: torch.Tensor, model: Embedder) -> torch.Tensor:
    """HEAR: (n_sounds, n_samples) float audio at ``model.sample_rate`` -> (n_sounds, scene_embedding_size)."""
    return model.get_scene_embeddings(audio)


def get_timestamp_embeddings(audio: torch.Tensor, model: Embedder) -> tuple[torch.Tensor, torch.Tensor]:
    """HEAR: (n_sounds, n_samples) audio -> (n_sounds, n_t, timestamp_embedding_size) and (n_sounds, n_t) ms."""
    return model.get_timestamp_embeddings(audio)
