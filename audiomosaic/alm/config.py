"""Configuration of the audio-language (LTU-style) adapter (docs/method.md §12).

The same system as the rest of the kit (``audiomosaic.config``): nested frozen dataclasses, presets as dicts of
dotted overrides, one ``apply_overrides`` path. ``AlmConfig()`` is the authors' recipe for one stage (ViT-B on
1024 x 128 fbanks, LTU's normalisation, LLaMA-7B, LoRA r 8 on q/v); ``ALM_PRESETS`` holds the four stages
(``stage1`` ... ``stage4``) with the values of their ``configs/AudioMosaic/stage*.yaml``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from audiomosaic.config import EncoderConfig, FrontendConfig, RuntimeConfig, apply_overrides, encoder_config, resolve
from audiomosaic.presets import ALM_PRESETS

Pooling = Literal["reference", "time"]
AudioInput = Literal["encoder", "zero", "shuffle"]  # zero / shuffle: the no-audio controls
Trainable = Literal["proj+norm", "all"]
StageData = Literal["cla", "closed", "mix"]
DType = Literal["float32", "bfloat16", "float16"]

# LTU's fbank normalisation, (x + 5.081) / 4.4849 (main_ltu_inference.py), not AudioSet's. The kit's front end
# divides by 2 * std (Decision 3), so std is stored halved: 2 * 2.24245 == 4.4849 exactly in binary floating point.
LTU_NORM_MEAN = -5.081
LTU_NORM_STD = 4.4849 / 2


@dataclass(frozen=True)
class PrefixConfig:
    """Encoder tokens -> LM input embeddings (``LTULlamaModel.forward``, the ``audio_input`` branch)."""

    # reference: the authors' reshape(groups, N / groups).mean(0) on time-major tokens, which averages over the
    # `groups` consecutive time blocks (1.28 s each at 1024 frames), so its tokens are not time steps;
    # time: mean over frequency per time step, so the prefix is a time sequence.
    pooling: Pooling = "reference"
    groups: int = 8  # reference pooling: the authors' 8
    stride: int = 2  # average-pool stride over the pooled tokens, (2, 1) in the code
    scale: float = 50.0  # tokens are divided by this before the norm ("hard norm to 50")
    token_norm: bool = True  # per-token LayerNorm initialised from the encoder's fc_norm (renamed to `norm`)


@dataclass(frozen=True)
class LMConfig:
    """The causal language model: any Hugging Face ``AutoModelForCausalLM`` directory, read offline."""

    path: str = ""  # local directory with config, weights and tokenizer (LLaMA-7B / Vicuna...); "" = given in code
    dtype: DType = "float32"  # weights of the frozen LM
    template: str = "alpaca_short"  # prompt template (audiomosaic.alm.text.TEMPLATES)
    cutoff_len: int = 108  # text tokens per example (the authors' cutoff)
    train_on_inputs: bool = True  # the loss also covers the prompt's tokens (all four stage configs)
    add_eos: bool = True


@dataclass(frozen=True)
class LoraConfig:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    targets: tuple[str, ...] = ()  # () = found per architecture (q_proj/v_proj, GPT-2's fused c_attn, ...)


@dataclass(frozen=True)
class StageConfig:
    """One training stage. Defaults: stage 2 of the authors' recipe."""

    name: str = "stage2"
    trainable: Trainable = "all"  # proj+norm: projector + token norm; all: + the encoder + LoRA (the LM stays frozen)
    data: StageData = "cla"  # cla: classification; closed: every closed-ended question; mix: closed + open (captions)
    lr: float = 1e-4
    epochs: int = 2
    warmup_steps: int = 100  # then linear decay to 0 (HF Trainer's default schedule)
    weight_decay: float = 0.0  # HF Trainer's default
    batch_size: int = 256  # global (per optimiser step)
    micro_batch: int = 32  # per forward; batch_size / micro_batch accumulation steps
    max_steps: int = 0  # > 0 caps the stage (smoke runs)


@dataclass(frozen=True)
class AlmConfig:
    frontend: FrontendConfig = field(default_factory=lambda: FrontendConfig(norm_mean=LTU_NORM_MEAN,
                                                                            norm_std=LTU_NORM_STD))
    # The LTU encoder has no drop path (AudioMosaicLlamaModel: drop_path_rate=0.0).
    encoder: EncoderConfig = field(default_factory=lambda: encoder_config("vit_base", drop_path_rate=0.0))
    encoder_path: str = ""  # AudioMosaic weights (audiomosaic.train.checkpoint.load_any); "" = random init
    audio: AudioInput = "encoder"  # zero: a zero prefix; shuffle: another clip's prefix
    prefix: PrefixConfig = field(default_factory=PrefixConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    runtime: RuntimeConfig = field(default_factory=lambda: RuntimeConfig(seed=7))  # main_ltu.py's default seed


def validate_alm(cfg: AlmConfig) -> AlmConfig:
    """Raise ValueError for an inconsistent batch or pooling (the choices are checked as ``Literal`` fields)."""
    if cfg.stage.batch_size % cfg.stage.micro_batch:
        raise ValueError(f"stage.batch_size={cfg.stage.batch_size} must be a multiple of "
                         f"stage.micro_batch={cfg.stage.micro_batch}")
    if cfg.prefix.stride < 1 or cfg.prefix.groups < 1:
        raise ValueError("prefix.stride and prefix.groups must be >= 1")
    return cfg


def resolve_alm(preset: str = "stage1", overrides: Mapping[str, Any] | None = None,
                base: Mapping[str, Any] | None = None) -> AlmConfig:
    """``AlmConfig()`` + ``base`` (a scale, e.g. the demonstration's) + a stage preset + ``overrides``.

    Raises:
        ValueError: unknown preset, unknown key, wrong type or an out-of-range value (naming the key).
    """
    cfg = apply_overrides(AlmConfig(), dict(base or {}))
    return validate_alm(resolve(preset, overrides, presets=ALM_PRESETS, cls=lambda: cfg))
