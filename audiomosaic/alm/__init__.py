"""The audio-language (LTU-style) adapter: an AudioMosaic encoder in front of any Hugging Face causal LM
(docs/method.md §12). ``transformers``/``peft`` (the ``alm`` extra) are imported only when an LM is built.

Modules: :mod:`~audiomosaic.alm.config` (AlmConfig, the four stage presets), :mod:`~audiomosaic.alm.prefix` (pooling,
scale, projector), :mod:`~audiomosaic.alm.text` (prompt template, tokenisation), :mod:`~audiomosaic.alm.lm` (the
wrapper, LoRA, adapter checkpoints), :mod:`~audiomosaic.alm.train` (one stage), :mod:`~audiomosaic.alm.recipe` (the
authors' recipe on LTU question files), :mod:`~audiomosaic.alm.demo`, :mod:`~audiomosaic.alm.evaluate` and
:mod:`~audiomosaic.alm.report` (the offline demonstration and its tables).
"""
from audiomosaic.alm.config import AlmConfig, LMConfig, LoraConfig, PrefixConfig, StageConfig, resolve_alm
from audiomosaic.alm.lm import AudioLM, build_audio_lm, find_lora_targets, load_adapter, load_audio_lm, save_adapter
from audiomosaic.alm.prefix import AudioPrefix, num_prefix_tokens, pool_tokens
from audiomosaic.alm.train import train_stage

__all__ = ["AlmConfig", "AudioLM", "AudioPrefix", "LMConfig", "LoraConfig", "PrefixConfig", "StageConfig",
           "build_audio_lm", "find_lora_targets", "load_adapter", "load_audio_lm", "num_prefix_tokens",
           "pool_tokens", "resolve_alm", "save_adapter", "train_stage"]
