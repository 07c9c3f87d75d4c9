"""The offline demonstration of the audio-language setting on the kit's own corpus (issue #13).

Claim tested at small scale (docs/method.md §12): an AudioMosaic-pretrained encoder makes a better audio front end
for an LLM than a random-init encoder, and the audio matters at all (a no-audio control). Everything runs on CPU:

1. captions and closed questions from clip metadata (``audiomosaic.data.captions``), split like the audio;
2. a small LLaMA-architecture LM with a word-level tokenizer, trained text-only on the train split's text (prompts
   and answers, no audio), saved as a local Hugging Face folder, then frozen;
3. per condition and seed, the authors' four stages (projector + norm; then encoder, projector and LoRA on
   classification, all closed questions, closed + captions) at a reduced scale;
4. on test clips (unseen voices, programs, kits, phrases): exact-match QA accuracy (seen and held-out phrasings),
   caption -> label accuracy and the F1 of attribute values named in captions.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from audiomosaic.alm.config import AlmConfig, resolve_alm
from audiomosaic.alm.evaluate import answer_all, attribute_f1, caption_to_label, exact_match
from audiomosaic.alm.lm import build_audio_lm, save_adapter
from audiomosaic.alm.report import run_rows, summary_table
from audiomosaic.alm.text import build_word_tokenizer, left_pad, make_prompt
from audiomosaic.alm.train import train_stage
from audiomosaic.config import resolve
from audiomosaic.data import build
from audiomosaic.data.audio import fit_length, read_audio
from audiomosaic.data.captions import CAPTION_PROMPTS, ClipText, attribute_values, questions, read_clips, stage_examples
from audiomosaic.frontend import fbank_batch, samples_for_frames
from audiomosaic.paths import data_dir
from audiomosaic.presets import ALM_DEMO_PRESETS
from audiomosaic.presets import ALM_STAGES as STAGES
from audiomosaic.repro.results import append_results, provenance

CONDITIONS = ("pretrained", "random_init", "no_audio")
CAPTION_ATTRS = ("word", "accent", "family", "register", "loudness", "drum", "pack")  # what captions name


@dataclass(frozen=True)
class DemoConfig:
    """Scale of the demonstration; ``alm_overrides`` go to every stage's ``AlmConfig`` (dotted keys)."""

    root: str = ""  # a built corpus; "" = data/built/<recipe>, built on first use
    recipe: str = "default"
    encoder_path: str = "runs/alm-encoder/encoder.safetensors"  # the AudioMosaic-pretrained encoder
    conditions: tuple[str, ...] = CONDITIONS
    seeds: tuple[int, ...] = (0, 1, 2)
    train_per_task: int = 200  # training clips drawn per task (seed 0, the same for every run)
    test_per_task: int = 50
    lm_width: int = 128
    lm_layers: int = 2
    lm_epochs: int = 3
    lm_lr: float = 2e-3
    batch_size: int = 32  # global = micro batch (the authors: 256 in micro-batches of 32)
    warmup_steps: int = 10  # the authors: 100 of a far longer run
    stage_epochs: tuple[int, int, int, int] = (6, 3, 2, 2)  # the authors: 2, 2, 1, 1 (stage 1 is cheap here)
    stage_lrs: tuple[float, float, float, float] = (1e-3, 1e-4, 1e-4, 1e-4)  # the authors'
    max_steps: int = 0  # > 0 caps every stage and the LM's training (smoke runs)
    max_new_tokens: int = 12
    group_by_clip: bool = True  # a batch holds all questions of batch_size / ~6 clips: ~5x fewer encoder passes
    alm_overrides: tuple[tuple[str, Any], ...] = ()  # e.g. (("prefix.pooling", "time"),)


def resolve_demo(preset: str = "cpu", overrides: dict[str, Any] | None = None) -> DemoConfig:
    """``DemoConfig()`` + a preset of ``audiomosaic.presets.ALM_DEMO_PRESETS`` (cpu, smoke) + ``overrides``."""
    return resolve(preset, overrides, presets=ALM_DEMO_PRESETS, cls=DemoConfig)


# ---------------------------------------------------------------------------------------------------- data
def select_clips(clips: Sequence[ClipText], split: str, per_task: int, seed: int = 0) -> list[ClipText]:
    """Up to ``per_task`` clips of each task from ``split``, drawn with ``seed`` (sorted by file)."""
    rng, out = np.random.default_rng(seed), []
    for task in sorted({c.task for c in clips}):
        pool = sorted((c for c in clips if c.task == task and c.split == split), key=lambda c: c.file)
        take = rng.permutation(len(pool))[:per_task]
        out += [pool[i] for i in sorted(take)]
    return out


def load_fbanks(root: Path, clips: Sequence[ClipText], cfg: AlmConfig, batch: int = 64) -> torch.Tensor:
    """(N, T, F) normalised fbanks (LTU's constants) of ``clips``, as float16 to halve the memory."""

    n = samples_for_frames(cfg.frontend.target_frames, cfg.frontend)
    out = []
    for i in range(0, len(clips), batch):
        wav = np.stack([fit_length(read_audio(root / c.file), n) for c in clips[i:i + batch]])
        out.append(fbank_batch(torch.from_numpy(wav), cfg.frontend)[:, 0].half())
    return torch.cat(out)


def corpus_text(clips: Sequence[ClipText], template: str) -> list[str]:
    """The LM's text-only training set: every training example of ``clips`` as prompt + answer (the answers'
    prior), and every closed question answered from the clip's caption given as the prompt's input (reading
    comprehension: the skill an LLM brings, which the audio prefix then has to feed)."""
    plain = [make_prompt(e["instruction"], "", e["output"], template) for c in clips for e in stage_examples(c, "mix")]
    read = [make_prompt(q["instruction"], c.caption, q["output"], template) for c in clips
            for q in questions(c, held_out=False)]
    return plain + read


# ------------------------------------------------------------------------------------------------------ LM
def train_text_lm(clips: Sequence[ClipText], demo: DemoConfig, out_dir: Path, seed: int = 0) -> Path:
    """A small LLaMA-architecture LM + word tokenizer trained on the train clips' text alone; saved to
    ``out_dir`` (``AutoModelForCausalLM.from_pretrained(out_dir, local_files_only=True)`` reads it)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = resolve_alm("stage1")
    texts = corpus_text(clips, cfg.lm.template)
    tok = build_word_tokenizer(texts)
    torch.manual_seed(seed)
    w = demo.lm_width
    lm = AutoModelForCausalLM.from_config(LlamaConfig(
        vocab_size=len(tok), hidden_size=w, intermediate_size=2 * w, num_hidden_layers=demo.lm_layers,
        num_attention_heads=max(1, w // 32), max_position_embeddings=256, pad_token_id=0, bos_token_id=1,
        eos_token_id=2, tie_word_embeddings=True))
    enc = [tok(t, truncation=True, max_length=cfg.lm.cutoff_len)["input_ids"] + [tok.eos_token_id] for t in texts]
    opt = torch.optim.AdamW(lm.parameters(), lr=demo.lm_lr, weight_decay=0.01)
    gen, step = torch.Generator().manual_seed(seed), 0
    total = demo.lm_epochs * -(-len(enc) // 64)
    total = min(total, demo.max_steps) if demo.max_steps else total
    lm.train()
    while step < total:
        for idx in torch.randperm(len(enc), generator=gen).split(64):
            b = left_pad([enc[i] for i in idx], tok.pad_token_id, [enc[i] for i in idx])
            for g in opt.param_groups:
                g["lr"] = demo.lm_lr * (1 - step / total)
            lm(**b, position_ids=(b["attention_mask"].cumsum(1) - 1).clamp(min=0)).loss.backward()
            opt.step(), opt.zero_grad()
            step += 1
            if step == total:
                break
    lm.eval()
    lm.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


# ---------------------------------------------------------------------------------------------------- runs
def stage_config(demo: DemoConfig, stage: str, condition: str, seed: int, lm_path: str) -> AlmConfig:
    """The ``AlmConfig`` of one stage of one run: the authors' stage preset at the demonstration's scale."""
    i = STAGES.index(stage)
    over = {"frontend.target_frames": 128, "lm.path": lm_path, "runtime.seed": seed,
            "stage.batch_size": demo.batch_size, "stage.micro_batch": demo.batch_size,
            "stage.warmup_steps": demo.warmup_steps, "stage.epochs": demo.stage_epochs[i],
            "stage.lr": demo.stage_lrs[i], "stage.max_steps": demo.max_steps, **dict(demo.alm_overrides)}
    over.update(_encoder_keys(demo.encoder_path))  # random_init: the pretrained encoder's architecture
    if condition == "pretrained":
        over["encoder_path"] = demo.encoder_path
    elif condition == "no_audio":
        over["audio"] = "zero"
    elif condition != "random_init":
        raise ValueError(f"condition={condition!r}; allowed: {', '.join(CONDITIONS)}")
    return resolve_alm(stage, over)


def _encoder_keys(path: str) -> dict[str, Any]:
    side = Path(path).with_suffix(".json")
    if not side.is_file():
        return {"encoder.embed_dim": 128, "encoder.depth": 6, "encoder.num_heads": 4}  # vit_mini (cpu preset)
    enc = json.loads(side.read_text())["encoder"]
    return {f"encoder.{k}": enc[k] for k in ("embed_dim", "depth", "num_heads", "mlp_ratio", "patch_size")}


def run_one(demo: DemoConfig, condition: str, seed: int, lm_path: str, data: dict[str, Any], out_dir: Path,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """The four stages of one (condition, seed), then the evaluation; writes ``out_dir/{stage*.safetensors,
    answers.jsonl, metrics.json}`` and returns the metrics."""
    torch.manual_seed(seed)
    cfgs = [stage_config(demo, s, condition, seed, lm_path) for s in STAGES]
    model = build_audio_lm(cfgs[0])
    summaries = []
    for cfg in cfgs:
        examples, get = stage_data(data, cfg)
        summaries.append(train_stage(model, examples, get, stage=cfg.stage, cache_features=True,
                                     group_by_clip=demo.group_by_clip))
        log(f"{condition} seed {seed} {cfg.stage.name}: {summaries[-1]['steps']} steps, loss "
            f"{summaries[-1]['loss_first']:.3f} -> {summaries[-1]['loss_last']:.3f}, {summaries[-1]['wall_s']:.0f} s")
    model.cfg = cfgs[-1]
    save_adapter(model, out_dir / "stage4", {"condition": condition, "stages": summaries})
    metrics, answers = evaluate(model, data, demo.max_new_tokens)
    metrics.update(condition=condition, seed=seed, train_wall_s=sum(s["wall_s"] for s in summaries))
    (out_dir / "answers.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def stage_data(data: dict[str, Any], cfg: AlmConfig) -> tuple[list[dict[str, Any]], Callable]:
    """A stage's training examples (``clip`` = index into the train clips) and its ``get_specs``."""
    specs = data["train_specs"]
    examples = [{**e, "clip": i} for i, c in enumerate(data["train"]) for e in stage_examples(c, cfg.stage.data)]
    return examples, lambda ids: specs[list(ids)].float()


def sample_answers(run_dir: str | Path, conditions: Sequence[str], seed: int, n: int = 4,
                   attribute: str = "caption"):
    """The first ``n`` test answers for one attribute (``caption``, ``label``, ...) of each condition's run."""
    import pandas as pd

    frames = []
    for cond in conditions:
        rows = [json.loads(line) for line in (Path(run_dir) / f"{cond}-s{seed}" / "answers.jsonl").open()]
        frames.append(pd.DataFrame([{"condition": cond, **r} for r in rows if r["attribute"] == attribute][:n]))
    df = pd.concat(frames, ignore_index=True)
    return df[["condition", "file", "instruction", "output", "prediction"]] if len(df) else df


def evaluate(model: Any, data: dict[str, Any], max_new_tokens: int = 12) -> tuple[dict[str, float], list[dict]]:
    """QA exact match (seen / held-out phrasings, and the classification question alone), caption -> label
    accuracy and caption attribute F1 on the test clips."""
    t0, test, specs = time.perf_counter(), data["test"], data["test_specs"]
    items = [{**q, "clip": i} for i, c in enumerate(test) for held in (False, True)
             for q in _first_per_attribute(questions(c, held))]
    items += [{"clip": i, "instruction": CAPTION_PROMPTS[0], "attribute": "caption", "phrasing": "seen",
               "output": c.caption} for i, c in enumerate(test)]
    preds = answer_all(model, items, lambda ids: specs[list(ids)].float(), max_new_tokens=max_new_tokens)
    answers = [{**it, "file": test[it["clip"]].file, "prediction": p} for it, p in zip(items, preds)]
    qa = [a for a in answers if a["attribute"] != "caption"]
    caps = [a for a in answers if a["attribute"] == "caption"]
    hit = lambda rows: float(np.mean([exact_match(a["prediction"], a["output"]) for a in rows])) if rows else 0.0  # noqa: E731
    labels = {t: sorted({c.label for c in data["train"] + test if c.task == t}) for t in {c.task for c in test}}
    cap_label = [caption_to_label(a["prediction"], labels[test[a["clip"]].task]) == test[a["clip"]].label for a in caps]
    vocab = {k: v for k, v in attribute_values(data["train"] + test).items() if k in CAPTION_ATTRS}
    f1 = attribute_f1([a["prediction"] for a in caps], [test[a["clip"]].attributes for a in caps], vocab)
    metrics = {"qa_seen": hit([a for a in qa if a["phrasing"] == "seen"]),
               "qa_novel": hit([a for a in qa if a["phrasing"] == "held_out"]),
               "cla_seen": hit([a for a in qa if a["attribute"] == "label" and a["phrasing"] == "seen"]),
               "caption_label": float(np.mean(cap_label)), "attribute_f1": f1["f1"],
               "n_test_clips": len(test), "eval_wall_s": time.perf_counter() - t0}
    return metrics, answers


def _first_per_attribute(qs: list[dict[str, str]]) -> list[dict[str, str]]:
    seen, out = set(), []
    for q in qs:
        if q["attribute"] not in seen:
            seen.add(q["attribute"])
            out.append(q)
    return out


def prepare(demo: DemoConfig, run_dir: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Corpus (built on first use), the selected clips, their fbanks and the text-only LM (reused if saved)."""

    root = Path(demo.root) if demo.root else data_dir(demo.recipe)
    if not (root / "metadata.csv").is_file():

        root = Path(build(demo.recipe, root, progress=False))
    clips = read_clips(root)
    data = {"root": root, "train": select_clips(clips, "train", demo.train_per_task),
            "test": select_clips(clips, "test", demo.test_per_task, seed=1)}
    cfg = stage_config(demo, "stage1", "random_init", 0, "")
    t0 = time.perf_counter()
    data["train_specs"] = load_fbanks(root, data["train"], cfg)
    data["test_specs"] = load_fbanks(root, data["test"], cfg)
    lm_dir = run_dir / "lm"
    if not (lm_dir / "config.json").is_file():
        train_text_lm(data["train"], demo, lm_dir)
    data["lm_path"] = str(lm_dir)
    log(f"{len(data['train'])} train / {len(data['test'])} test clips from {root}; fbanks + LM "
        f"{time.perf_counter() - t0:.0f} s")
    return data


def run_demo(demo: DemoConfig, run_dir: str | Path, results_dir: str | Path | None = None,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every (seed, condition) run, seed by seed (a finished run's ``metrics.json`` is reused), then the tables.

    Returns:
        ``{"runs": per-run rows, "summary": the table with CIs}``; with ``results_dir`` they are also written to
        ``alm_runs.csv`` (rows with provenance, replacing earlier rows of the same condition/seed/metric) and
        ``table_alm.csv`` (from every row of ``alm_runs.csv``).
    """

    run_dir = Path(run_dir)
    data = prepare(demo, run_dir, log)
    metrics = []
    for seed in demo.seeds:
        for cond in demo.conditions:
            out = run_dir / f"{cond}-s{seed}"
            done = out / "metrics.json"
            if not done.is_file():
                out.mkdir(parents=True, exist_ok=True)
                run_one(demo, cond, seed, data["lm_path"], data, out, log)
            cfg = stage_config(demo, "stage4", cond, seed, data["lm_path"])
            prov = provenance(cfg, f"audiomosaic.alm.demo ({demo.recipe} corpus)")
            metrics.append({**json.loads(done.read_text()), **{k: v for k, v in prov.items() if k != "seed"}})
    runs = run_rows(metrics)
    if results_dir is not None:
        runs = append_results(runs.to_dict("records"), Path(results_dir) / "alm_runs.csv",
                              key=("condition", "seed", "metric"))
    summary = summary_table(runs)
    if results_dir is not None:
        summary.to_csv(Path(results_dir) / "table_alm.csv", index=False)
    return {"runs": runs, "summary": summary}
