"""Embedding API: ``audiomosaic.load(path)`` -> :class:`Embedder`, whose ``embed`` takes audio of any length.

Audio is cut into windows of the trained input length (``frontend.target_frames`` frames of 10 ms, e.g. 10.24 s
for 1024 frames), with a hop of one window unless asked otherwise; the last window is zero-padded (in the log-mel
domain, exactly as training pads short clips). Each window gives the pooled, ``fc_norm``-ed representation
(docs/method.md §4), or the token mean of one block's output with ``layer``; a clip's embedding is the mean over its windows.
The HEAR-style functions (``load_model``, ``get_scene_embeddings``, ``get_timestamp_embeddings``) wrap the same.

CLI: ``python -m audiomosaic embed FILES... --checkpoint PATH --out emb.npy`` writes an (n_files, D) array and
``emb.json`` with the file names.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from audiomosaic.config import FrontendConfig, from_dict
from audiomosaic.frontend import fbank_batch, num_frames, resample, to_mono
from audiomosaic.model import AudioMosaic
from audiomosaic.train.checkpoint import load_any

Audio = torch.Tensor | np.ndarray


def _resolve_device(name: str) -> torch.device:
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


class Embedder:
    """A frozen encoder plus its front end.

    Args:
        model: the encoder (put in eval mode and moved to ``device``).
        frontend: normalisation constants and window length (``target_frames``).
        device: ``auto``, ``cpu``, ``cuda``, ...
        hop_seconds: hop between windows; None = one window (no overlap).
        batch_size: windows per forward pass.
    """

    def __init__(self, model: AudioMosaic, frontend: FrontendConfig, device: str = "auto",
                 hop_seconds: float | None = None, batch_size: int = 16):
        self.device = _resolve_device(device)
        self.model = model.eval().to(self.device)
        self.frontend = frontend
        self.hop_seconds = hop_seconds
        self.batch_size = batch_size
        self.sample_rate = frontend.sample_rate
        self.scene_embedding_size = self.timestamp_embedding_size = model.cfg.embed_dim  # HEAR attribute names

    @property
    def window_seconds(self) -> float:
        return self.frontend.target_frames * self.frontend.frame_shift_ms / 1000

    def _hop_frames(self, hop_seconds: float | None) -> int:
        hop = self.hop_seconds if hop_seconds is None else hop_seconds
        if hop is None:
            return self.frontend.target_frames
        frames = int(round(hop * 1000 / self.frontend.frame_shift_ms))
        if frames < 1:
            raise ValueError(f"hop_seconds={hop} is shorter than one {self.frontend.frame_shift_ms} ms frame")
        return frames

    def _windows(self, wav: torch.Tensor, hop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(S,) at the model rate -> windows (n, 1, T, F) and their centre times (n,) in seconds."""
        cfg, t = self.frontend, self.frontend.target_frames
        n = num_frames(wav.numel(), cfg)
        if n == 0:
            raise ValueError(f"waveform of {wav.numel()} samples is shorter than one {cfg.frame_length_ms} ms frame")
        n_win = 1 + math.ceil(max(n - t, 0) / hop)
        full = dataclasses.replace(cfg, target_frames=(n_win - 1) * hop + t)  # pads the tail like training does
        feat = fbank_batch(wav[None].to(self.device), full)[0, 0]  # (frames, F)
        win = feat.unfold(0, t, hop).transpose(1, 2)[:, None]  # (n_win, 1, T, F)
        starts = torch.arange(n_win, dtype=torch.float64) * hop
        centres = (starts + t / 2) * cfg.frame_shift_ms / 1000
        return win, centres.float()

    @torch.no_grad()
    def _encode(self, windows: torch.Tensor, layer: int | None) -> torch.Tensor:
        """(n, 1, T, F) -> (n, D) in chunks of ``batch_size``."""
        out = []
        for chunk in windows.split(self.batch_size):
            if layer is None:
                out.append(self.model.forward_head(self.model.forward_features(chunk), pre_logits=True))
            else:
                out.append(self.model.pool(self.model.forward_intermediates(chunk, [layer])[0]))
        return torch.cat(out).float().cpu()

    def _as_clips(self, waveform: Audio | Sequence[Audio], sample_rate: int) -> tuple[list[torch.Tensor], bool]:
        """Normalise the input to a list of mono (S,) clips at the model rate; also say whether it was a batch."""
        if isinstance(waveform, (list, tuple)):
            clips, batched = [to_mono(w) for w in waveform], True
        else:
            w = torch.as_tensor(np.asarray(waveform) if isinstance(waveform, np.ndarray) else waveform).float()
            if w.ndim not in (1, 2):
                raise ValueError(f"waveform must be (S,) or a (B, S) batch, got shape {tuple(w.shape)}")
            clips, batched = ([w] if w.ndim == 1 else list(w)), w.ndim == 2
        return [resample(c.float(), sample_rate, self.sample_rate) for c in clips], batched

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
        per_clip = [self._windows(c, hop) for c in clips]
        emb = self._encode(torch.cat([w for w, _ in per_clip]), layer)  # every window of every clip at once
        win_emb = list(emb.split([len(ts) for _, ts in per_clip]))
        times = [ts for _, ts in per_clip]
        scene = torch.stack([e.mean(0) for e in win_emb])  # (B, D)
        if not batched:
            return {"embedding": scene[0], "window_embeddings": win_emb[0], "timestamps": times[0]}
        return {"embedding": scene, "window_embeddings": win_emb, "timestamps": times}

    def get_scene_embeddings(self, audio: torch.Tensor) -> torch.Tensor:
        """HEAR: (B, S) audio at ``sample_rate`` -> (B, D)."""
        return self.embed(torch.as_tensor(audio), self.sample_rate)["embedding"]

    def get_timestamp_embeddings(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """HEAR: (B, S) audio -> embeddings (B, n, D) and window-centre timestamps (B, n) in milliseconds."""
        out = self.embed(torch.as_tensor(audio), self.sample_rate)
        return torch.stack(out["window_embeddings"]), torch.stack(out["timestamps"]) * 1000.0


def load(path: str | Path, device: str = "auto", frontend: FrontendConfig | None = None,
         hop_seconds: float | None = None, batch_size: int = 16) -> Embedder:
    """Load an encoder for embedding: our safetensors export, a resume checkpoint, or the authors' ``.pt``.

    Args:
        path: checkpoint file (see :func:`audiomosaic.train.checkpoint.load_any`).
        device: ``auto`` picks CUDA when available.
        frontend: override the stored front end (normalisation constants, window length in frames).
        hop_seconds: default hop between windows (None = one window).
        batch_size: windows per forward pass.
    """
    model = load_any(path)
    return Embedder(model, frontend or frontend_from_checkpoint(path, model), device, hop_seconds, batch_size)


# HEAR 2021 module-level API names.
def load_model(model_file_path: str = "", device: str = "auto") -> Embedder:
    return load(model_file_path, device=device)


def get_scene_embeddings(audio: torch.Tensor, model: Embedder) -> torch.Tensor:
    return model.get_scene_embeddings(audio)


def get_timestamp_embeddings(audio: torch.Tensor, model: Embedder) -> tuple[torch.Tensor, torch.Tensor]:
    return model.get_timestamp_embeddings(audio)


# ---------------------------------------------------------------------------------------------------------- CLI
