"""One configuration system for the CLI, the notebooks and the library.

Nested frozen dataclasses hold every setting; presets are plain dicts of dotted overrides (audiomosaic/presets.py),
turned into a run's config by ``resolve``. ``apply_overrides`` is the single path by which anything (``key=value``
on the command line, papermill parameters, a preset) changes a config. Values are parsed with ``ast.literal_eval``
and type-checked against the field (a ``Literal`` field against its choices), unknown keys are errors that name
the key and list the allowed ones. Configs are never mutated after they are built: overrides return a
new object (``dataclasses.replace``).
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import json
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from audiomosaic.presets import ENCODER_PRESETS, NORM_STATS, TRAIN_PRESETS

# --------------------------------------------------------------------------------------------------------------
# Sub-configs
# --------------------------------------------------------------------------------------------------------------

# Field metadata: the field enters config_hash only when it differs from its default (for fields added after
# results were recorded under the old hash).
HASH_IF_SET = "hash_if_set"

# Choice sets, declared once: a field annotated with one of these accepts only its values (``_coerce`` on an
# override, ``validate`` on a built config); masking.py and augment/chain.py read the same definitions.
MaskMode = Literal["tf", "tt", "ff", "unstructured", "none"]
Layout = Literal["paper", "reference"]  # docs/method.md Decision 1: the paper's geometry or the released code's
CkptPolicy = Literal["block", "attn", "mlp", "matmul"]
AugmentPreset = Literal["none", "aug2", "aug4", "aug6", "full"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Loss = Literal["auto", "bce", "ce"]
Objective = Literal["contrastive", "mae"]  # pre-training objective: AudioMosaic or the generative baseline
FinetuneHead = Literal["linear", "aasist"]  # fine-tuning head: linear on pooled tokens, AASIST over all tokens
TokenOrder = Literal["flat", "grid"]  # AASIST temporal axis: the token sequence (authors) or true time columns


def choices(tp: Any) -> tuple[Any, ...]:
    """The allowed values of a ``Literal`` choice set, in declaration order: ``choices(MaskMode)``."""
    return typing.get_args(tp)


@dataclass(frozen=True)
class FrontendConfig:
    """Waveform -> normalised Kaldi log-mel fbank (docs/method.md §2)."""

    sample_rate: int = 16000  # every waveform is resampled to this before the fbank
    num_mel_bins: int = 128
    target_frames: int = 1024  # 1024 AudioSet/pre-training, 512 ESC-50, 128 Speech Commands
    frame_shift_ms: float = 10.0
    frame_length_ms: float = 25.0
    norm_mean: float = NORM_STATS["audioset"][0]
    norm_std: float = NORM_STATS["audioset"][1]  # the code divides by 2*std (docs/method.md Decision 3)


@dataclass(frozen=True)
class EncoderConfig:
    """ViT encoder + projector (docs/method.md §4). Field names follow the authors' ``encoder_config``."""

    spec_size: tuple[int, int] = (1024, 128)  # (T frames, F mel bins); time is the "height" axis
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    proj_bias: bool = True
    pre_norm: bool = True  # the extra LayerNorm after adding the position table (timm norm_pre)
    pos_trainable: bool = True
    drop_path_rate: float = 0.1
    projector_hidden: int = 512
    projector_out: int = 128
    grad_ckpt_fraction: float = 0.0  # checkpoint the first floor(depth * f) blocks (authors: 0.7)
    # What those blocks recompute in backward: "block" (all of it, as the authors), "attn" or "mlp" (one branch),
    # "matmul" (selective: keep matrix-product/attention outputs, recompute norms, GELU, casts). Memory/speed.
    grad_ckpt_policy: CkptPolicy = "block"
    sincos_layout: Layout = "paper"  # "paper": sin-cos on the true (T, F) grid; "reference": the code's (8, 64) view


@dataclass(frozen=True)
class MaskConfig:
    """Which tokens each of the two views keeps (docs/method.md §5)."""

    mode: MaskMode = "tf"  # tf (view A time, view B freq), tt, ff, unstructured, none
    layout: Layout = "paper"  # paper: whole columns/rows of the true grid; reference: the authors' code exactly
    ratio_time: float = 0.6  # fraction of time units dropped
    ratio_freq: float = 0.4  # fraction of frequency units dropped
    ratio: float = 0.75  # unstructured: fraction of tokens dropped in both views


@dataclass(frozen=True)
class MaeConfig:
    """The masked-reconstruction objective (``objective=mae``): AudioMAE's recipe with a light decoder.

    AudioMAE pre-trains with mask ratio 0.8, per-patch normalised targets and a 512-wide, 16-head decoder; the
    defaults here are CPU-sized (the ``mae_vit_base`` preset restores the published decoder)."""

    mask_ratio: float = 0.8  # fraction of patches dropped (unstructured, per example)
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    decoder_mlp_ratio: float = 4.0
    norm_pix_loss: bool = True  # targets normalised per patch (mean 0, variance 1)


@dataclass(frozen=True)
class AugmentConfig:
    """The two-view waveform augmentation chain (docs/method.md §3, paper Table 8), batched in torch."""

    preset: AugmentPreset = "full"  # none, aug2, aug4, aug6, full (cumulative presets of the authors' code)
    roll_mag: bool = True  # circular roll over the whole length, then gain Beta(10,10)+0.5
    p_polarity: float = 0.5
    p_time_stretch: float = 0.7
    stretch_rate: tuple[float, float] = (0.7, 1.3)
    p_noise: float = 0.5
    snr_db: tuple[float, float] = (5.0, 40.0)
    p_gain: float = 0.3
    gain_db: tuple[float, float] = (-12.0, 12.0)
    p_highpass: float = 0.3
    highpass_hz: tuple[float, float] = (20.0, 2400.0)
    p_bandstop: float = 0.5
    bandstop_center_hz: tuple[float, float] = (200.0, 4000.0)
    bandstop_bandwidth: tuple[float, float] = (0.5, 1.99)  # bandwidth as a fraction of the centre frequency
    filter_rolloff_db: tuple[float, float] = (12.0, 24.0)  # dB/octave, for both filters
    p_pitch: float = 0.6
    pitch_semitones: tuple[float, float] = (-4.0, 4.0)
    # Phase vocoder of time stretch and pitch shift: librosa's defaults. hop = n_fft / 2 halves its cost at some
    # loss of quality (bench/NOTES.md, "Input pipeline"); n_fft must be a multiple of hop.
    vocoder_n_fft: int = 2048
    vocoder_hop: int = 512


@dataclass(frozen=True)
class DataConfig:
    """Where the audio comes from and how it is batched."""

    recipe: str = "default"  # built corpus used when ``root`` is empty: tiny, default, large
    root: str = ""  # a built corpus (``python -m audiomosaic data build``); "" = data/built/<recipe>
    manifest: str = ""  # explicit manifest JSON; "" = the corpus' pretrain.json / task train.json
    test_manifest: str = ""  # probes/fine-tunes with an explicit ``manifest``: the evaluation split's manifest
    task: str = "kws35"  # labelled task for probes and fine-tunes
    clip_seconds: float = 1.0  # waveform length fed to the augmentation (pad/cut)
    batch_size: int = 512  # per process
    num_workers: int = 2
    cache_features: bool = False  # probes/fine-tunes: read fp16 fbanks from a memory-mapped cache
    # pre-training: render-on-the-fly sets of the corpus (``<root>/onthefly/<name>.json``, ``large`` recipe) whose
    # train split joins pretrain.json's pool, e.g. ("notes_large", "speech_large"); "all" = every spec there
    onthefly: tuple[str, ...] = field(default=(), metadata={HASH_IF_SET: True})
    # pre-training: read whole files and cut each clip at a random ``clip_seconds`` window, drawn on the training
    # device from the run's checkpointed generator (resume stays exact); False: the first ``clip_seconds``
    random_crop: bool = field(default=False, metadata={HASH_IF_SET: True})


@dataclass(frozen=True)
class OptimConfig:
    """AdamW + per-step warmup/cosine schedule (docs/method.md §7)."""

    lr: float = 6e-4  # absolute lr (pre-training is not batch-scaled); see ``blr`` for fine-tuning
    blr: float = 0.0  # if > 0: lr = blr * global_batch / 256 (fine-tuning/probing convention)
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_epochs: float = 1.0
    epochs: int = 400
    layer_decay: float = 1.0  # < 1: BEiT layer-wise lr decay over 13 groups
    grad_clip: float = 0.0  # 0 = none (authors: none)
    accum_steps: int = 1


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how a run executes."""

    seed: int = 42
    device: str = "auto"  # auto -> cuda if available else cpu
    precision: Precision = "auto"  # auto -> bf16 autocast on CUDA, fp32 on CPU; or fp32, bf16, fp16
    compile: bool = False
    log_every: int = 10  # steps between metrics.jsonl lines (the only host syncs)
    ckpt_every: int = 500  # steps between resume checkpoints
    keep_ckpts: int = 2
    progress: bool = True
    deterministic: bool = False
    # Testing only (elastic-restart tests): SIGKILL the last rank right after this step, on a first attempt only
    # (not after a resume or a torchrun restart). 0 = never.
    fail_at_step: int = 0
    # pre-training: also export the encoder every this many steps (encoder-step<N>.safetensors: learning curves)
    export_every: int = field(default=0, metadata={HASH_IF_SET: True})


@dataclass(frozen=True)
class PretrainConfig:
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    tau: float = 0.1  # NT-Xent temperature, fixed (docs/method.md §6)
    max_steps: int = 0  # > 0 caps the run (smoke runs, benchmarks)
    # contrastive: AudioMosaic (two masked views, NT-Xent); mae: masked reconstruction (AudioMAE-style baseline,
    # one view, unstructured mask of mae.mask_ratio, light decoder dropped at export; ``mask`` is then unused)
    objective: Objective = field(default="contrastive", metadata={HASH_IF_SET: True})
    mae: MaeConfig = field(default_factory=lambda: MaeConfig(), metadata={HASH_IF_SET: True})


@dataclass(frozen=True)
class DownstreamConfig:
    """What probes and fine-tunes share (the fields, their keys and meanings); each sets its own ``data`` and
    ``optim`` defaults. Only the two subclasses are run."""

    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    loss: Loss = "auto"  # auto: bce for multi-label tasks, ce for single-label; or bce, ce
    eer: bool = False  # also report the equal error rate (binary tasks, class 1 positive)
    eval_every: int = 1  # epochs between test evaluations; the last epoch is always evaluated
    report_best: bool = False  # also report the best-on-test epoch, labelled so (docs/method.md Decision 5)


@dataclass(frozen=True)
class ProbeConfig(DownstreamConfig):
    """Probes of a frozen encoder (docs/method.md §9). Defaults: the authors' AS-20K linear probe (``linear_prob_as20k``).

    The encoder runs once over the data (eval mode: no drop path, no masking); every requested head then trains on
    the cached pooled features. So, unlike the authors' probes, the training clips get no mixup/SpecAugment/roll.
    ``data.batch_size`` is the head-training batch; ``extract_batch`` only sets the encoder's forward batch;
    ``encoder`` is read only for the random-init baseline.
    """

    data: DataConfig = field(default_factory=lambda: DataConfig(batch_size=16))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(blr=1e-3, weight_decay=0.0, epochs=60,
                                                                   warmup_epochs=4.0))
    heads: tuple[str, ...] = ("linear",)  # linear, weighted (SUPERB softmax sum), attentive (Rauch et al.)
    layers: tuple[int, ...] = (-1,)  # linear heads on these entries: block i output, -1 = final output
    all_layers: bool = False  # add a linear head on every block output 0..depth-1 (layer-wise probe, Fig. 3)
    extract_batch: int = 64  # clips per frozen-encoder forward (no gradients: the size does not change results)
    # > 1: report the mean test metric of the last this-many epochs (each evaluated; cuts epoch-to-epoch noise)
    average_last: int = field(default=1, metadata={HASH_IF_SET: True})


@dataclass(frozen=True)
class FinetuneConfig(DownstreamConfig):
    """End-to-end fine-tuning (docs/method.md §8). Defaults: the authors' AS-20K recipe (``finetune_as20k``).

    With a checkpoint the architecture comes from the checkpoint and only ``encoder.drop_path_rate`` is read here;
    the input length is always (frontend.target_frames, frontend.num_mel_bins), the position table is resized to it.
    """

    data: DataConfig = field(default_factory=lambda: DataConfig(batch_size=64, clip_seconds=10.0))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(blr=5e-4, weight_decay=0.01, epochs=60,
                                                                   warmup_epochs=4.0, layer_decay=0.65))
    mask_t_prob: float = 0.2  # fraction of time columns dropped in training (random_masking_2d, true grid)
    mask_f_prob: float = 0.2  # fraction of frequency rows dropped in training
    mixup: float = 0.8  # probability that a clip is mixed with another: waveforms and labels by lam ~ Beta(10, 10)
    freqm: int = 48  # SpecAugment: one frequency mask, width uniform in [0, freqm)
    timem: int = 192  # SpecAugment: one time mask, width uniform in [0, timem)
    roll_mag: bool = True  # circular roll + Beta(10, 10) + 0.5 gain on training waveforms
    spec_noise: bool = False  # Speech Commands recipe: fbank + U(0,1) * u / 10, then a roll of +-10 frames
    balanced_sampler: bool = False  # draw clips with weights from inverse label frequencies (AS-2M recipe)
    samples_per_epoch: int = 0  # balanced sampler: clips per epoch (0 = training-set size; AS-2M: 200000)
    class_weights: tuple[float, ...] = ()  # ce class weights (EnvSDD: (0.1, 0.9)); () = unweighted
    folds: tuple[int, ...] = ()  # ESC-50 style: train on the other folds, test on each listed fold, average
    max_steps: int = 0  # > 0 caps the run (smoke runs)
    # "aasist": encoder + AASIST graph back-end over all final tokens (audiomosaic.aasist; binary tasks, the authors'
    # EnvSDD ``_aasist`` variant); "linear": the pooled-token linear head
    head: FinetuneHead = field(default="linear", metadata={HASH_IF_SET: True})
    aasist_token_order: TokenOrder = field(default="flat", metadata={HASH_IF_SET: True})  # see AASISTHead
    # A held-out split (a manifest path, or a name = <train manifest's folder>/<name>.json): when set, it is the split
    # evaluated during training (every eval_every epochs) and the best epoch is chosen on it (best.safetensors); the
    # test split is then not read during training (audiomosaic.train.spoof).
    dev_manifest: str = field(default="", metadata={HASH_IF_SET: True})
    # Manifests (paths or names as dev_manifest) evaluated once after training, with the last and the best-on-dev
    # model: per-set (and per-generator) EER/AUC for binary tasks with ``eer``, else the task metrics.
    test_sets: tuple[str, ...] = field(default=(), metadata={HASH_IF_SET: True})


# --------------------------------------------------------------------------------------------------------------
# A run's config from a preset (the tables are in audiomosaic/presets.py)
# --------------------------------------------------------------------------------------------------------------

PRESET_ENV = "AUDIOMOSAIC_PRESET"  # the notebooks' switch (docs/notebooks.md §5C): AUDIOMOSAIC_PRESET=smoke pytest ...


def preset_from_env(default: str) -> str:
    """``$AUDIOMOSAIC_PRESET`` when it is set and non-empty, else ``default``.

    The one place that reads the switch; its callers are the entry points (the CLI commands and the notebooks'
    config cells), so committed notebooks and CI can switch every run to ``smoke`` without editing parameters,
    while library code (``resolve`` and everything below it) never looks at the environment.
    """
    return os.environ.get(PRESET_ENV) or default


def resolve(preset: str = "cpu", overrides: Mapping[str, Any] | None = None, *,
            presets: Mapping[str, Mapping[str, Any]] | None = None, cls: type = PretrainConfig) -> Any:
    """The config of a run: ``cls()`` + the preset's overrides + ``overrides`` (later wins). Pure: the
    environment switch is applied by the caller (:func:`preset_from_env`).

    Args:
        preset: a key of ``presets`` (default: TRAIN_PRESETS).
        overrides: dotted (``{"optim.lr": 1e-3}``) or nested overrides; strings are parsed as literals.
        presets, cls: another preset table and config class, e.g. ``PROBE_PRESETS`` and ``ProbeConfig``.

    Raises:
        ValueError: unknown preset (listing the allowed ones), unknown key or wrong type (naming the key).
    """
    presets = TRAIN_PRESETS if presets is None else presets
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r}; allowed: {', '.join(presets)}")
    return apply_overrides(apply_overrides(cls(), presets[preset]), dict(overrides or {}))


def encoder_config(name: str = "vit_base", **overrides: Any) -> EncoderConfig:
    """Build an EncoderConfig from a preset name plus keyword overrides.

    Raises:
        ValueError: unknown preset or field, naming the allowed values.
    """
    if name not in ENCODER_PRESETS:
        raise ValueError(f"unknown encoder preset {name!r}; allowed: {sorted(ENCODER_PRESETS)}")
    return apply_overrides(EncoderConfig(), {**ENCODER_PRESETS[name], **overrides})


# --------------------------------------------------------------------------------------------------------------
# Override machinery
# --------------------------------------------------------------------------------------------------------------


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Parse strings with literal_eval and check ``value`` against the annotation ``tp``."""
    origin = typing.get_origin(tp)
    if origin is Literal:  # a choice set: the value must be one of its members (strings are not parsed)
        if value not in choices(tp) or type(value) not in {type(c) for c in choices(tp)}:
            raise ValueError(f"config key {key!r}: {value!r} is not a choice; allowed: {_allowed(tp)}")
        return value
    if isinstance(value, str) and tp is not str:
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            if origin is tuple and typing.get_args(tp) == (str, Ellipsis):  # CLI: names=a,b (or one bare name)
                return tuple(v.strip() for v in value.split(",") if v.strip())
            if not (origin in (typing.Union, types.UnionType) and str in typing.get_args(tp)):
                raise ValueError(f"config key {key!r}: cannot parse {value!r} as {_tname(tp)}") from None
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if type(value) is not tp:
            raise ValueError(f"config key {key!r}: expected {_tname(tp)}, got {value!r} ({type(value).__name__})")
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (tuple, list)):
            raise ValueError(f"config key {key!r}: expected a tuple {_tname(tp)}, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise ValueError(f"config key {key!r}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if origin in (typing.Union, types.UnionType):
        for a in typing.get_args(tp):
            if a is type(None) and value is None:
                return None
            try:
                return _coerce(value, a, key)
            except ValueError:
                continue
        raise ValueError(f"config key {key!r}: {value!r} does not match {_tname(tp)}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return apply_overrides(tp(), _flatten(value))
        raise ValueError(f"config key {key!r}: expected a mapping for {tp.__name__}, got {value!r}")
    return value


def _tname(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _allowed(tp: Any) -> str:
    return ", ".join(map(str, choices(tp)))


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for name, tp in _field_types(cls).items():
        if dataclasses.is_dataclass(tp):
            keys += _all_keys(tp, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def apply_overrides(cfg: Any, overrides: Mapping[str, Any]) -> Any:
    """Return a copy of ``cfg`` with dotted ``overrides`` applied, e.g. ``{"mask.ratio_time": "0.5"}``.

    Nested mappings are accepted too (``{"mask": {"ratio_time": 0.5}}``), as papermill/YAML parameters give them.

    Raises:
        ValueError: an unknown key (listing the allowed keys) or a value of the wrong type.
    """
    flat = _flatten(overrides)
    types_ = _field_types(type(cfg))
    grouped: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    for key, value in flat.items():
        head, _, rest = key.partition(".")
        if head not in types_:
            raise ValueError(f"unknown config key {key!r}; allowed keys: {', '.join(_all_keys(type(cfg)))}")
        tp = types_[head]
        if rest:
            if not dataclasses.is_dataclass(tp):
                raise ValueError(f"unknown config key {key!r}: {head!r} is not a section")
            grouped.setdefault(head, {})[rest] = value
        else:
            direct[head] = _coerce(value, tp, key)
    for head, sub in grouped.items():
        try:
            direct[head] = apply_overrides(direct.get(head, getattr(cfg, head)), sub)
        except ValueError as e:
            raise ValueError(str(e).replace("config key '", f"config key '{head}.")) from None
    cfg = dataclasses.replace(cfg, **direct)
    validate(cfg)
    return cfg


def parse_kv(items: list[str]) -> dict[str, str]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": "1", "c": "x"}`` (values are parsed later, against the field type)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain dict (tuples become lists) suitable for JSON and ``torch.load(weights_only=True)``."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls: type, d: Mapping[str, Any]) -> Any:
    """Rebuild a config of type ``cls`` from ``to_dict`` output; unknown keys are errors."""
    return apply_overrides(cls(), d)


def config_changes(saved: Mapping[str, Any], cfg: Any) -> list[str]:
    """The top-level sections in which ``cfg`` differs from a saved ``to_dict`` of its class (a checkpoint's
    config); fields added to the config classes since it was saved count as their defaults."""
    old, now = to_dict(from_dict(type(cfg), saved)), to_dict(cfg)
    return [k for k, v in now.items() if old.get(k) != v]


def _hashed_fields(cfg: Any) -> dict[str, Any]:
    """``cfg`` as a dict, without the ``HASH_IF_SET`` fields that hold their default."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.metadata.get(HASH_IF_SET):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if value == default:
                continue
        out[f.name] = _hashed_fields(value) if dataclasses.is_dataclass(value) else value
    return out


def config_hash(cfg: Any) -> str:
    """Short stable hash of a config (results tables and run folders are keyed by it). A field added later is
    marked ``HASH_IF_SET``, so that every config that leaves it at its default keeps its earlier hash."""
    import hashlib

    return hashlib.sha256(json.dumps(_hashed_fields(cfg), sort_keys=True).encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------------------------
# Validation: bad values fail early with the allowed range in the message.
# --------------------------------------------------------------------------------------------------------------

def validate(cfg: Any) -> None:
    """Raise ValueError for out-of-range values of a (sub-)config: a choice field (a ``Literal``) outside its
    set, e.g. in a config built directly (``MaskConfig(mode="diag")``), and the ranges below."""
    for name, tp in _field_types(type(cfg)).items():
        if typing.get_origin(tp) is Literal and getattr(cfg, name) not in choices(tp):
            raise ValueError(f"{type(cfg).__name__}.{name}={getattr(cfg, name)!r}; allowed: {_allowed(tp)}")
    if isinstance(cfg, MaskConfig):
        for name in ("ratio_time", "ratio_freq", "ratio"):
            r = getattr(cfg, name)
            if not 0.0 <= r < 1.0:
                raise ValueError(f"mask.{name}={r} is outside [0, 1)")
    if isinstance(cfg, EncoderConfig):
        t, f = cfg.spec_size
        p = cfg.patch_size
        if t % p or f % p:
            raise ValueError(f"encoder.spec_size={cfg.spec_size} must be divisible by patch_size={p}")
        if cfg.embed_dim % cfg.num_heads:
            raise ValueError(f"encoder.embed_dim={cfg.embed_dim} must be divisible by num_heads={cfg.num_heads}")
        if not 0.0 <= cfg.grad_ckpt_fraction <= 1.0:
            raise ValueError(f"encoder.grad_ckpt_fraction={cfg.grad_ckpt_fraction} is outside [0, 1]")
    if isinstance(cfg, AugmentConfig):
        for f_ in dataclasses.fields(cfg):
            if f_.name.startswith("p_") and not 0.0 <= getattr(cfg, f_.name) <= 1.0:
                raise ValueError(f"augment.{f_.name}={getattr(cfg, f_.name)} is outside [0, 1]")
        if cfg.vocoder_hop < 1 or cfg.vocoder_n_fft % cfg.vocoder_hop:
            raise ValueError(f"augment.vocoder_n_fft={cfg.vocoder_n_fft} must be a multiple of "
                             f"augment.vocoder_hop={cfg.vocoder_hop} >= 1")
