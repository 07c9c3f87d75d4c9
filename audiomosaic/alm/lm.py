"""An audio prefix in front of any Hugging Face causal LM, with LoRA through peft (docs/method.md §12).

``AudioLM`` holds the ``AudioPrefix`` (encoder, pooling, projector) and a frozen ``transformers`` causal LM whose
attention gets LoRA adapters. The LM only ever sees ``inputs_embeds``: audio embeddings followed by the text's.
Every row is laid out ``[pads][audio][text]`` with position ids counted over the attended tokens, so a row
computes the same thing whatever the batch's padding (the authors put the audio before the left padding); the
loss is on text only (labels -100 on pads and audio). Nothing is downloaded: LMs load with ``local_files_only``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from audiomosaic.alm.config import AlmConfig
from audiomosaic.alm.prefix import AudioPrefix
from audiomosaic.alm.text import IGNORE, encode_prompt, left_pad
from audiomosaic.config import apply_overrides, config_hash, from_dict, to_dict
from audiomosaic.model import AudioMosaic
from audiomosaic.train.checkpoint import load_any

# LoRA targets by architecture, the first whose names all occur among the LM's linear layers wins: LLaMA-family
# (LLaMA, Vicuna, Mistral, Qwen, OPT, GPT-J, Phi) q/v; GPT-2 / GPT-BigCode's fused qkv; GPT-NeoX, Falcon, BLOOM;
# Phi-3; MPT.
LORA_TARGETS: tuple[tuple[str, ...], ...] = (("q_proj", "v_proj"), ("c_attn",), ("query_key_value",),
                                             ("qkv_proj",), ("Wqkv",))
ADAPTER_FORMAT = "audiomosaic-alm"


def _linear_types() -> tuple[type, ...]:
    from transformers.pytorch_utils import Conv1D

    return nn.Linear, Conv1D


def find_lora_targets(lm: nn.Module) -> tuple[str, ...]:
    """The attention projections LoRA adapts in ``lm``: ``("q_proj", "v_proj")`` for LLaMA-family models,
    ``("c_attn",)`` for GPT-2, ...

    Raises:
        ValueError: no known name; the message lists the model's linear-layer names to pass as ``lora.targets``.
    """
    names = {n.rsplit(".", 1)[-1] for n, m in lm.named_modules() if isinstance(m, _linear_types())}
    for group in LORA_TARGETS:
        if set(group) <= names:
            return group
    raise ValueError(f"no known attention projection in {type(lm).__name__}; set lora.targets to some of "
                     f"{sorted(names)}")


def add_lora(lm: nn.Module, cfg: AlmConfig) -> tuple[str, ...]:
    """Insert LoRA adapters into ``lm`` in place (peft) and return the target names."""
    import peft

    targets = cfg.lora.targets or find_lora_targets(lm)
    conv1d = _linear_types()[1]
    fan_in_fan_out = any(isinstance(m, conv1d) for n, m in lm.named_modules() if n.rsplit(".", 1)[-1] in targets)
    lora = peft.LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout, bias="none",
                           target_modules=list(targets), fan_in_fan_out=fan_in_fan_out)
    peft.inject_adapter_in_model(lora, lm)
    return targets


def load_lm(path: str, dtype: str = "float32") -> tuple[nn.Module, Any]:
    """A causal LM and its tokenizer from a local directory, never from the network.

    Raises:
        ValueError: ``path`` is not a directory.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not Path(path).is_dir():
        raise ValueError(f"LM directory {path!r} not found: point lm.path at a local Hugging Face model folder")
    lm = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=getattr(torch, dtype))
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tok.pad_token_id is None:  # LLaMA: the authors pad with id 0 (unk), distinct from EOS
        tok.pad_token_id = 0
    tok.padding_side = "left"
    return lm, tok


class AudioLM(nn.Module):
    """Audio prefix + frozen causal LM with LoRA.

    Args:
        prefix: the audio prefix (its projector's width must equal the LM's hidden size).
        lm: a ``transformers`` causal LM (from ``load_lm`` or built from a config); LoRA is added in place.
        tokenizer: its tokenizer (pad and EOS ids are read from it).
        cfg: the configuration (LoRA, prompt, which parameters train, the no-audio controls).
    """

    def __init__(self, prefix: AudioPrefix, lm: nn.Module, tokenizer: Any, cfg: AlmConfig):
        super().__init__()
        self.cfg, self.prefix, self.lm, self.tokenizer = cfg, prefix, lm, tokenizer
        self.lora_targets = add_lora(lm, cfg) if cfg.lora.r > 0 else ()
        self.set_trainable(cfg.stage.trainable)

    # ------------------------------------------------------------------------------------------- training
    def set_trainable(self, trainable: str) -> None:
        """``proj+norm``: the projector and the per-token norm (stage 1); ``all``: also the encoder and LoRA."""
        for p in self.parameters():
            p.requires_grad_(False)
        if trainable == "all":
            for name, p in self.named_parameters():
                unused = name.startswith("prefix.encoder.") and name.split(".")[2] in ("fc_norm", "projector", "head")
                if ("lora_" in name or name.startswith("prefix.")) and not unused:
                    p.requires_grad_(True)
        elif trainable != "proj+norm":
            raise ValueError(f"trainable={trainable!r}; allowed: proj+norm, all")
        for p in (*self.prefix.proj.parameters(), *self.prefix.token_norm.parameters()):
            p.requires_grad_(True)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    # ------------------------------------------------------------------------------------------ embedding
    def audio_embeds(self, spec: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, F) fbanks, or the encoder's (B, 1 + N, D) output when cached -> (B, P, H) prefix embeddings;
        the ``zero`` / ``shuffle`` controls replace the audio."""
        if self.cfg.audio == "zero":  # the encoder is never run: the prefix carries no information
            n, d = self.prefix.grid[0] * self.prefix.grid[1], self.prefix.encoder.cfg.embed_dim
            return self.prefix.from_tokens(self.prefix.proj.weight.new_zeros(spec.shape[0], n, d))
        x = self.prefix.from_features(self.prefix.features(spec) if features is None else features)
        return x.roll(1, dims=0) if self.cfg.audio == "shuffle" else x  # another clip's audio

    def assemble(self, audio: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Left-padded text + audio prefix -> rows ``[pads][audio][text]``.

        Args:
            audio: (B, P, H) prefix embeddings.
            input_ids, attention_mask: (B, L) left-padded text.
            labels: (B, L) or None.

        Returns:
            ``inputs_embeds`` (B, P + L, H), ``attention_mask`` and ``position_ids`` (B, P + L), and ``labels``
            (B, P + L, IGNORE on pads and audio) when labels are given.
        """
        b, p = audio.shape[:2]
        text = self.lm.get_input_embeddings()(input_ids).to(audio.dtype)  # (B, L, H)
        mask = torch.cat([attention_mask.new_ones(b, p), attention_mask], dim=1)  # [audio][text], pads inside
        key = torch.cat([attention_mask.new_ones(b, p), 2 * attention_mask], dim=1)  # pads 0, audio 1, text 2
        order = key.argsort(dim=1, stable=True)  # (B, P + L): pads first, then audio, then text
        emb = torch.cat([audio, text], dim=1).gather(1, order[..., None].expand(-1, -1, audio.shape[-1]))
        mask = mask.gather(1, order)
        out = {"inputs_embeds": emb, "attention_mask": mask, "position_ids": (mask.cumsum(1) - 1).clamp(min=0)}
        if labels is not None:  # the first text token is not predicted from the audio (the authors cut the
            # audio's hidden states off before the shift), so it gets no label either
            labels = labels.scatter(1, attention_mask.argmax(dim=1, keepdim=True), IGNORE)
            out["labels"] = torch.cat([labels.new_full((b, p), IGNORE), labels], dim=1).gather(1, order)
        return out

    def forward(self, spec: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor, features: torch.Tensor | None = None,
                audio_index: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Next-token cross-entropy on the text tokens (mean over tokens with a label) and the logits.

        Args:
            spec: (C, T, F) fbanks of the batch's clips.
            input_ids, attention_mask, labels: (B, L) left-padded text.
            features: the encoder's output for ``spec`` when it is cached (a frozen encoder); ``spec`` then only
                gives the number of clips.
            audio_index: (B,) the clip of each text row when several rows share a clip (C < B); None: C = B.
        """
        audio = self.audio_embeds(spec, features)
        audio = audio if audio_index is None else audio[audio_index]
        batch = self.assemble(audio, input_ids, attention_mask, labels)
        labels = batch.pop("labels")
        logits = self.lm(**batch, use_cache=False).logits  # (B, P + L, V)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE)
        return {"loss": loss, "logits": logits}

    # ----------------------------------------------------------------------------------------- generation
    @torch.no_grad()
    def generate_ids(self, spec: torch.Tensor, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int = 20,
                     **gen_kwargs: Any) -> torch.Tensor:
        """Continue each ``[audio][prompt]`` row (greedy unless ``gen_kwargs`` say otherwise).

        Returns:
            (B, n_new) new token ids, padded with the pad id after EOS.
        """
        tok = self.tokenizer
        text = left_pad(prompt_ids, tok.pad_token_id)
        dev = spec.device
        batch = self.assemble(self.audio_embeds(spec), text["input_ids"].to(dev), text["attention_mask"].to(dev))
        batch.pop("position_ids")  # generate() derives them from the mask the same way, step by step
        kw = {"do_sample": False, "max_new_tokens": max_new_tokens, "pad_token_id": tok.pad_token_id,
              "eos_token_id": tok.eos_token_id, **gen_kwargs}
        return self.lm.generate(**batch, **kw)

    def generate(self, spec: torch.Tensor, instructions: Sequence[str], max_new_tokens: int = 20,
                 **gen_kwargs: Any) -> list[str]:
        """Answers to one instruction per clip, decoded without special tokens."""
        prompts = [encode_prompt(self.tokenizer, q, self.cfg.lm) for q in instructions]
        ids = self.generate_ids(spec, prompts, max_new_tokens, **gen_kwargs)
        return [s.strip() for s in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]


# ------------------------------------------------------------------------------------------------ building
def build_encoder(cfg: AlmConfig) -> AudioMosaic:
    """The encoder: ``cfg.encoder_path`` through the kit's loader, else a random init seeded by the config; no
    drop path, input (frontend.target_frames, num_mel_bins)."""
    spec_size = (cfg.frontend.target_frames, cfg.frontend.num_mel_bins)
    if cfg.encoder_path:

        return load_any(cfg.encoder_path, drop_path_rate=0.0, spec_size=spec_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.runtime.seed)
        return AudioMosaic(apply_overrides(cfg.encoder, {"spec_size": spec_size}), projector=False)


def build_audio_lm(cfg: AlmConfig, lm: nn.Module | None = None, tokenizer: Any = None) -> AudioLM:
    """Encoder + prefix + LM (``lm``/``tokenizer`` if given, else loaded from ``cfg.lm.path``) + LoRA."""
    if lm is None:
        lm, tokenizer = load_lm(cfg.lm.path, cfg.lm.dtype)
    encoder = build_encoder(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.runtime.seed + 1)
        prefix = AudioPrefix(encoder, lm.get_input_embeddings().embedding_dim, cfg.prefix)
        return AudioLM(prefix, lm, tokenizer, cfg)


# ---------------------------------------------------------------------------------------------- checkpoints
def model_hash(cfg: AlmConfig) -> str:
    """Hash of what fixes the tensors' names and shapes and the frozen weights around them (not the stage)."""
    return config_hash(apply_overrides(AlmConfig(), {"encoder": to_dict(cfg.encoder), "prefix": to_dict(cfg.prefix),
                                                     "lora": to_dict(cfg.lora), "lm.path": cfg.lm.path,
                                                     "encoder_path": cfg.encoder_path}))


def save_adapter(model: AudioLM, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """The trainable tensors only, as ``path`` (.safetensors) + ``path.json`` (LM path, config and its hashes)."""
    from safetensors.torch import save_file

    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous().cpu() for k, v in model.trainable_state_dict().items()}, str(path))
    side = {"format": ADAPTER_FORMAT, "lm_path": model.cfg.lm.path, "config": to_dict(model.cfg),
            "config_hash": config_hash(model.cfg), "model_hash": model_hash(model.cfg),
            "lora_targets": list(model.lora_targets), **(meta or {})}
    path.with_suffix(".json").write_text(json.dumps(side, indent=2))
    return path


def load_adapter(model: AudioLM, path: str | Path) -> list[str]:
    """Load ``save_adapter`` output into ``model`` (every stored tensor must exist with its shape).

    Returns:
        the names loaded.

    Raises:
        ValueError: a missing sidecar, another model (``model_hash`` differs) or an unknown tensor name.
    """
    from safetensors.torch import load_file

    path = Path(path).with_suffix(".safetensors")
    side = json.loads(path.with_suffix(".json").read_text()) if path.with_suffix(".json").exists() else None
    if not side or side.get("format") != ADAPTER_FORMAT:
        raise ValueError(f"{path}: no {ADAPTER_FORMAT} sidecar next to it")
    if side["model_hash"] != model_hash(model.cfg):
        raise ValueError(f"{path} was saved for another model (model hash {side['model_hash']} != "
                         f"{model_hash(model.cfg)}): compare its sidecar's config with this one")
    tensors, params = load_file(str(path)), dict(model.named_parameters())
    unknown = sorted(set(tensors) - set(params))
    if unknown:
        raise ValueError(f"{path}: tensors not in the model: {unknown[:5]}")
    with torch.no_grad():
        for k, v in tensors.items():
            params[k].copy_(v)
    return sorted(tensors)


def load_audio_lm(path: str | Path, lm: nn.Module | None = None, tokenizer: Any = None) -> AudioLM:
    """Rebuild the model of an adapter checkpoint from its sidecar (the LM from ``lm_path`` unless given)."""
    side = json.loads(Path(path).with_suffix(".json").read_text())
    model = build_audio_lm(from_dict(AlmConfig, side["config"]), lm, tokenizer)
    load_adapter(model, path)
    return model
