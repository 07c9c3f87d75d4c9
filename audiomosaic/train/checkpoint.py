"""Weights in and out: the authors' state dicts, our safetensors exports, and atomic resume checkpoints.

Loading never unpickles code: weights are safetensors, everything else goes through
``torch.load(weights_only=True)`` (plain dicts, tensors, numbers).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from audiomosaic.config import EncoderConfig, from_dict, to_dict
from audiomosaic.model import AudioMosaic
from audiomosaic.pos_embed import resize_pos_embed

_PREFIXES = ("_orig_mod.", "module.")  # torch.compile and DDP wrappers
_NESTED_KEYS = ("model", "state_dict", "model_state_dict", "module")


def unwrap(model: nn.Module) -> nn.Module:
    """Strip DDP (``.module``) and torch.compile (``._orig_mod``) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def strip_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove any stack of ``_orig_mod.`` / ``module.`` prefixes from every key."""
    pattern = re.compile(r"^(?:" + "|".join(re.escape(p) for p in _PREFIXES) + r")+")
    return {pattern.sub("", k): v for k, v in state_dict.items()}


def extract_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """Find the state dict inside a loaded checkpoint (``{'model': sd, 'optimizer': ...}`` or a bare sd)."""
    for key in _NESTED_KEYS:
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            return extract_state_dict(obj[key])
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return strip_prefixes(obj)
    raise ValueError("no state dict found: expected a mapping of tensors, or one under 'model'/'state_dict'")


def encoder_config_from_authors(d: Mapping[str, Any]) -> EncoderConfig:
    """Map the authors' ``encoder_config`` (e.g. ``patch_size: [16, 16]``) onto EncoderConfig."""
    d = dict(d)
    ps = d.pop("patch_size", 16)
    if isinstance(ps, (list, tuple)):
        if len(set(ps)) != 1:
            raise ValueError(f"only square patches are supported, got patch_size={ps}")
        ps = ps[0]
    d["patch_size"] = int(ps)
    d["spec_size"] = tuple(d.get("spec_size", (1024, 128)))
    known = set(EncoderConfig.__dataclass_fields__)
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown encoder_config keys {unknown}; allowed: {sorted(known)}")
    return from_dict(EncoderConfig, d)


def infer_layout(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Read depth, width, projector sizes and head size off a state dict (for checkpoints without a config)."""
    sd = strip_prefixes(state_dict)
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    d = sd["cls_token"].shape[-1]
    # Heads cannot be read off the weights: assume the ViT convention of 64-wide heads (tiny/small/base).
    out = dict(depth=depth, embed_dim=d, num_heads=max(1, d // 64), patch_size=sd["patch_embed.proj.weight"].shape[-1],
               mlp_ratio=sd["blocks.0.mlp.fc1.weight"].shape[0] / d, qkv_bias="blocks.0.attn.qkv.bias" in sd,
               proj_bias="blocks.0.attn.proj.bias" in sd, pre_norm="norm_pre.weight" in sd)
    if "projector.0.weight" in sd:
        out.update(projector_hidden=sd["projector.0.weight"].shape[0], projector_out=sd["projector.3.weight"].shape[0])
    return out


def load_authors_state_dict(model: AudioMosaic, state_dict: Mapping[str, torch.Tensor],
                            strict: bool = True) -> tuple[list[str], list[str]]:
    """Load an authors' (or our) state dict into ``model``, resizing the position table to the model's grid.

    With ``strict=True`` (the default) any missing or unexpected key is an error. Use ``strict=False`` to start a
    classifier from a pre-training checkpoint; the projector is then skipped and the new head left at its init.

    Returns:
        (missing, unexpected) key lists (both empty under strict loading).
    """
    sd = dict(strip_prefixes(state_dict))
    pos = sd.get("pos_embed")
    if pos is not None and pos.shape != model.pos_embed.shape:
        n = pos.shape[1] - 1
        f = model.grid[1]
        if n % f:
            raise ValueError(f"pos_embed with {n} patches does not fit a grid with {f} frequency patches")
        sd["pos_embed"] = resize_pos_embed(pos, (n // f, f), model.grid)
    if not strict:
        own = model.state_dict()
        sd = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    missing, unexpected = model.load_state_dict(sd, strict=strict)
    return list(missing), list(unexpected)


# ------------------------------------------------------------------------------------------ safetensors export

def git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def save_weights(model: nn.Module, path: str | Path, meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``path`` (.safetensors) plus ``path.json``: encoder config, head/projector layout, git SHA, ``meta``."""
    from safetensors.torch import save_model

    model = unwrap(model)
    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path))
    os.chmod(path, 0o644)  # safetensors writes 0600; checkpoints are shared on GPU boxes
    sidecar = {"format": "audiomosaic", "encoder": to_dict(model.cfg),
               "num_classes": 0 if model.head is None else model.head.out_features,
               "projector": model.projector is not None, "git_sha": git_sha(), **(meta or {})}
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2))
    return path


def load_weights(path: str | Path, **encoder_overrides: Any) -> AudioMosaic:
    """Rebuild a model from ``save_weights`` output (.safetensors + .json sidecar)."""
    from safetensors.torch import load_file

    path = Path(path)
    side = path.with_suffix(".json")
    if not side.exists():
        raise ValueError(f"{side} not found: a .safetensors export needs its JSON sidecar")
    meta = json.loads(side.read_text())
    cfg = from_dict(EncoderConfig, {**meta["encoder"], **encoder_overrides})
    if meta.get("head") == "aasist":  # a fine-tuned encoder + AASIST classifier (FinetuneConfig.head)
        from audiomosaic.aasist import AudioMosaicAASIST  # late: aasist builds on this module

        model = AudioMosaicAASIST(cfg, token_order=meta.get("token_order", "flat"))
    else:
        model = AudioMosaic(cfg, num_classes=meta.get("num_classes", 0), projector=meta.get("projector", True))
    load_authors_state_dict(model, load_file(str(path)))
    return model


def load_any(path: str | Path, **encoder_overrides: Any) -> AudioMosaic:
    """Load our safetensors export, a resume checkpoint, or an authors' ``.pt``/``.pth`` state dict.

    A bare state dict carries no config: sizes are read off the tensors, heads assumed 64 wide, the input length
    defaults to 1024 frames; pass ``num_heads=...``/``spec_size=(T, F)`` to override.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        return load_weights(path, **encoder_overrides)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a weights-only checkpoint"
        raise ValueError(f"{path}: not a weights-only PyTorch checkpoint ({type(e).__name__}: {str(e)[:200]})")
    sd = extract_state_dict(obj)
    if isinstance(obj, Mapping) and isinstance(obj.get("config"), Mapping) and "encoder" in obj["config"]:
        cfg = from_dict(EncoderConfig, {**obj["config"]["encoder"], **encoder_overrides})
    elif isinstance(obj, Mapping) and isinstance(obj.get("encoder_config"), Mapping):
        cfg = encoder_config_from_authors({**obj["encoder_config"], **encoder_overrides})
    else:  # a bare state dict (e.g. the released weights): sizes from the tensors, the rest from overrides
        cfg = from_dict(EncoderConfig, {**infer_layout(sd), **encoder_overrides})
    num_classes = sd["head.weight"].shape[0] if "head.weight" in sd else 0
    model = AudioMosaic(cfg, num_classes=num_classes, projector="projector.0.weight" in sd)
    load_authors_state_dict(model, sd)
    return model


# ----------------------------------------------------------------------------------------- resume checkpoints

def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, fsync, rename: a crash never leaves a half-written ``path``."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_resume(state: Mapping[str, Any], run_dir: str | Path, step: int, keep: int = 2) -> Path:
    """Write ``run_dir/checkpoints/step-XXXXXXXX.pt`` atomically and keep the newest ``keep`` of them."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / f"step-{step:08d}.pt"
    atomic_torch_save(dict(state), path)
    for old in list_resume(run_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def list_resume(run_dir: str | Path) -> list[Path]:
    """Resume checkpoints of a run, oldest first."""
    return sorted((Path(run_dir) / "checkpoints").glob("step-*.pt"))


def load_resume(run_dir: str | Path) -> dict[str, Any] | None:
    """The newest readable resume checkpoint, falling back to older ones (with a warning) if it is corrupt."""
    for path in reversed(list_resume(run_dir)):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or "step" not in state:
                raise ValueError("not a resume checkpoint")
            state["path"] = str(path)
            return state
        except Exception as e:  # noqa: BLE001 - truncated zip, bad pickle, wrong content: try the previous one
            warnings.warn(f"resume checkpoint {path} is unreadable ({type(e).__name__}: {str(e)[:120]}); "
                          "falling back to the previous one", stacklevel=2)
    return None
