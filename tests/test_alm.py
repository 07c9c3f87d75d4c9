"""The audio-language adapter (audiomosaic.alm, docs/method.md §12) on tiny random LMs: no download, CPU, seconds."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")
pytest.importorskip("peft")

from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig  # noqa: E402

from audiomosaic.alm.config import ALM_PRESETS, LTU_NORM_MEAN, LTU_NORM_STD, resolve_alm  # noqa: E402
from audiomosaic.alm.lm import build_audio_lm, find_lora_targets, load_adapter, load_audio_lm, save_adapter  # noqa: E402
from audiomosaic.alm.prefix import num_prefix_tokens, pool_tokens  # noqa: E402
from audiomosaic.alm.text import IGNORE, build_word_tokenizer, encode_example, left_pad  # noqa: E402
from audiomosaic.alm.train import linear_warmup_lr, train_stage  # noqa: E402
from audiomosaic.frontend import normalise  # noqa: E402

TEXT = ["### Instruction: what is the word ? which accent ? describe the sound .",
        "### Response: the word happy spoken in new york english ; a soft low bass note ; a kick drum hit"]
NANO = {"encoder": {"embed_dim": 32, "depth": 2, "num_heads": 2}, "frontend.target_frames": 64,
        "runtime.seed": 0}
QA = [("what is the word ?", "happy"), ("describe the sound .", "a soft low bass note"),
      ("which accent ?", "new york")]


@pytest.fixture(scope="module")
def tok(one_thread_module):  # one thread for this module only (restored after: other tests compare across processes)
    return build_word_tokenizer(TEXT)


def tiny_lm(arch: str, vocab: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if arch == "llama":
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                          pad_token_id=0, bos_token_id=1, eos_token_id=2, initializer_range=0.2)
    else:
        cfg = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=128, pad_token_id=0,
                         bos_token_id=1, eos_token_id=2, initializer_range=0.2)
    return AutoModelForCausalLM.from_config(cfg)


def make(arch: str, tok, stage: str = "stage2", **over):
    cfg = resolve_alm(stage, {**NANO, "stage.batch_size": 3, "stage.micro_batch": 3, "stage.warmup_steps": 0,
                              **over})
    return build_audio_lm(cfg, tiny_lm(arch, len(tok)), tok)


def batch(model, qa=QA):
    enc = [encode_example(model.tokenizer, q, a, model.cfg.lm) for q, a in qa]
    b = left_pad([e["input_ids"] for e in enc], model.tokenizer.pad_token_id, [e["labels"] for e in enc])
    torch.manual_seed(1)
    return {"spec": torch.randn(len(qa), 64, 128), **b}


# ------------------------------------------------------------------------------------------------ prefix
def test_reference_pooling_is_the_authors_formula():
    x = torch.randn(2, 512, 16)  # ViT-B at 1024 x 128: a (64 time, 8 freq) grid, time-major
    authors = F.avg_pool2d(x.reshape(2, 8, 64, 16).mean(dim=1), (2, 1))  # LTULlamaModel.forward
    assert torch.allclose(pool_tokens(x, (64, 8), "reference", 8, 2), authors, atol=1e-6)
    # ... which averages the 8 time blocks: token 0 is (offset 0, freq rows 0-1) of every 1.28-s block
    blocks = x.reshape(2, 8, 8, 8, 16)  # (B, block, offset, freq, D)
    assert torch.allclose(authors[:, 0], blocks[:, :, 0, :2].mean(dim=(1, 2)), atol=1e-6)
    time = pool_tokens(x, (64, 8), "time", 8, 2)  # a time sequence: freq mean, then pairs of time steps
    assert torch.allclose(time[:, 3], x.reshape(2, 64, 8, 16)[:, 6:8].mean(dim=(1, 2)), atol=1e-6)
    cfg = resolve_alm("stage1").prefix
    assert num_prefix_tokens((64, 8), cfg) == 32 == num_prefix_tokens((64, 8), resolve_alm(
        "stage1", {"prefix.pooling": "time"}).prefix)


def test_ltu_normalisation_and_stage_presets():
    cfg = resolve_alm("stage1")
    x = torch.tensor([0.0, -5.081, 3.0])
    assert torch.equal(normalise(x, cfg.frontend), (x + 5.081) / 4.4849)
    assert (LTU_NORM_MEAN, 2 * LTU_NORM_STD) == (-5.081, 4.4849)
    s = {k: resolve_alm(k).stage for k in ALM_PRESETS}
    assert [(s[k].trainable, s[k].data, s[k].lr, s[k].epochs) for k in sorted(s)] == [
        ("proj+norm", "cla", 1e-3, 2), ("all", "cla", 1e-4, 2), ("all", "closed", 1e-4, 1), ("all", "mix", 1e-4, 1)]
    assert (cfg.stage.batch_size, cfg.stage.micro_batch, cfg.stage.warmup_steps, cfg.lm.cutoff_len) == (256, 32, 100, 108)
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.encoder.embed_dim) == (8, 16, 0.05, 768)
    with pytest.raises(ValueError, match="prefix.pooling"):
        resolve_alm("stage1", {"prefix.pooling": "max"})
    with pytest.raises(ValueError, match="unknown config key"):
        resolve_alm("stage1", {"stage.lrr": 1.0})
    assert linear_warmup_lr(50, 200, cfg.stage) == pytest.approx(5e-4)
    assert linear_warmup_lr(150, 200, cfg.stage) == pytest.approx(5e-4)


# -------------------------------------------------------------------------------------------- forward/loss
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_shapes_finite_loss_and_lora_targets(arch, tok):
    model = make(arch, tok)
    assert model.lora_targets == (("q_proj", "v_proj") if arch == "llama" else ("c_attn",))
    assert find_lora_targets(tiny_lm(arch, len(tok))) == model.lora_targets
    b = batch(model)
    p = model.prefix.num_tokens
    assert p == 4 * 8 // 8 // 2 * 1 and model.audio_embeds(b["spec"]).shape == (3, p, 32)  # grid (4, 8)
    out = model(**b)
    assert out["logits"].shape == (3, p + b["input_ids"].shape[1], len(tok)) and torch.isfinite(out["loss"])


def test_loss_equals_hand_built_inputs_embeds(tok):
    model = make("llama", tok, **{"lora.dropout": 0.0})
    model.eval()
    b = batch(model)
    loss = model(**b)["loss"]
    lm, nll, n = model.lm, 0.0, 0
    for i in range(3):  # each example alone, unpadded: [audio][text], positions 0..P+L-1
        keep = b["attention_mask"][i].bool()
        ids, labels = b["input_ids"][i][keep], b["labels"][i][keep]
        audio = model.prefix(b["spec"][i:i + 1])
        emb = torch.cat([audio, lm.get_input_embeddings()(ids)[None]], dim=1)
        logits = lm(inputs_embeds=emb).logits[0, audio.shape[1]:]  # text positions
        nll += F.cross_entropy(logits[:-1], labels[1:], reduction="sum")
        n += len(labels) - 1
    assert torch.allclose(loss, nll / n, atol=1e-5)


def test_loss_is_on_text_only(tok):
    model = make("llama", tok)
    b = batch(model)
    asm = model.assemble(model.audio_embeds(b["spec"]), b["input_ids"], b["attention_mask"], b["labels"])
    p, lab, mask = model.prefix.num_tokens, asm["labels"], asm["attention_mask"]
    for i in range(3):  # [pads][audio][text]: pads, audio and the first text token (BOS) carry no label
        n_pad = int((b["attention_mask"][i] == 0).sum())
        assert (lab[i, :n_pad + p + 1] == IGNORE).all() and (lab[i, n_pad + p + 1:] != IGNORE).all()
        assert (mask[i, :n_pad] == 0).all() and (mask[i, n_pad:] == 1).all()
        assert asm["position_ids"][i, n_pad:].tolist() == list(range(mask.shape[1] - n_pad))
    resp = make("llama", tok, **{"lm.train_on_inputs": False})
    e = encode_example(tok, *QA[1], resp.cfg.lm)
    supervised = [t for t, y in zip(e["input_ids"], e["labels"]) if y != IGNORE]
    assert tok.decode(supervised, skip_special_tokens=True) == "a soft low bass note"


# ------------------------------------------------------------------------------------------------ training
def _changed(model, before):
    return {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}


def _one_step(model):
    b = batch(model)
    examples = [{"clip": i, "instruction": q, "output": a} for i, (q, a) in enumerate(QA)]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_stage(model, examples, lambda ids: b["spec"][list(ids)], cache_features=True)
    return _changed(model, before)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_stage2_updates_only_encoder_prefix_and_lora(arch, tok):
    model = make(arch, tok, **{"stage.max_steps": 1, "stage.lr": 1e-2})
    changed = _one_step(model)
    assert changed and all(n.startswith("prefix.") or "lora_" in n for n in changed)
    assert any("lora_B" in n for n in changed) and any(n.startswith("prefix.encoder.blocks") for n in changed)
    assert not any(n.startswith("lm.") and "lora_" not in n for n in changed)  # the LM itself is frozen


def test_stage1_trains_projector_and_norm_only(tok):
    model = make("llama", tok, stage="stage1", **{"stage.max_steps": 1, "stage.lr": 1e-2})
    changed = _one_step(model)
    assert changed == {"prefix.proj.weight", "prefix.proj.bias", "prefix.token_norm.weight",
                       "prefix.token_norm.bias"}


# ---------------------------------------------------------------------------------------------- generation
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_left_padded_batch_generation_equals_one_by_one(arch, tok):
    model = make(arch, tok)
    model.eval()
    b = batch(model)
    prompts = [q for q, _ in QA]
    together = model.generate(b["spec"], prompts, max_new_tokens=6)
    alone = [model.generate(b["spec"][i:i + 1], [q], max_new_tokens=6)[0] for i, q in enumerate(prompts)]
    assert together == alone and len(set(together)) > 1


# ---------------------------------------------------------------------------------------------- checkpoint
def test_adapter_round_trip(tok, tmp_path):
    model = make("gpt2", tok, **{"stage.max_steps": 1, "stage.lr": 1e-2})
    lm_copy = copy.deepcopy(tiny_lm("gpt2", len(tok)))  # the frozen LM, as at the start
    _one_step(model)
    path = save_adapter(model, tmp_path / "stage2")
    side = path.with_suffix(".json").read_text()
    assert '"model_hash"' in side and '"lm_path"' in side
    again = load_audio_lm(path, lm_copy, tok)
    again.eval()
    b = batch(model)
    assert torch.equal(model(**b)["logits"], again(**b)["logits"])
    other = make("gpt2", tok, **{"prefix.pooling": "time"})
    with pytest.raises(ValueError, match="another model"):
        load_adapter(other, path)


# -------------------------------------------------------------------------------------------------- recipe
def test_recipe_runs_stage1_then_stage2_from_an_ltu_json(tok, tmp_path):
    import json

    import numpy as np
    import soundfile as sf

    from audiomosaic.alm.recipe import run_stage

    rng = np.random.default_rng(0)
    for i in range(2):
        sf.write(tmp_path / f"c{i}.wav", 0.1 * rng.standard_normal(12000).astype("float32"), 16000)
    rows = [{"audio_id": f"c{i % 2}.wav", "instruction": q, "input": "", "output": a} for i, (q, a) in enumerate(QA)]
    (tmp_path / "qa.json").write_text(json.dumps(rows))
    over = {"stage.batch_size": 2, "stage.micro_batch": 1, "stage.max_steps": 1}
    one = make("llama", tok, stage="stage1", **over)
    a1 = run_stage(one.cfg, tmp_path / "qa.json", tmp_path / "run", audio_root=tmp_path, device="cpu", model=one)
    two = make("llama", tok, stage="stage2", **over)
    a2 = run_stage(two.cfg, tmp_path / "qa.json", tmp_path / "run", init=a1, audio_root=tmp_path, device="cpu",
                   model=two)
    assert a1.name == "stage1.safetensors" and a2.name == "stage2.safetensors"
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count('"stage"') == 2
