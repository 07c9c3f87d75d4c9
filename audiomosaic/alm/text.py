"""Prompts and tokenisation for the audio-language adapter (docs/method.md §12).

The authors follow LTU / alpaca-lora: ``Prompter("alpaca_short")`` builds the prompt, the tokenizer adds BOS,
the text is cut at ``cutoff_len`` tokens, EOS is appended when there is room, and the labels are the input ids
(``train_on_inputs: true`` in every stage; otherwise the prompt's tokens get -100). The tokenizer pads on the left.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch

from audiomosaic.alm.config import LMConfig

IGNORE = -100  # label of tokens without loss: pads, audio, and the prompt when train_on_inputs is off

# alpaca-lora's templates (LTU's Prompter reads them from templates/<name>.json).
TEMPLATES: dict[str, dict[str, str]] = {
    "alpaca_short": {
        "prompt_input": "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
        "prompt_no_input": "### Instruction:\n{instruction}\n\n### Response:\n",
    },
    "alpaca": {
        "prompt_input": "Below is an instruction that describes a task, paired with an input that provides further "
                        "context. Write a response that appropriately completes the request.\n\n"
                        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
        "prompt_no_input": "Below is an instruction that describes a task. Write a response that appropriately "
                           "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n",
    },
}


def make_prompt(instruction: str, input_text: str = "", output: str = "", template: str = "alpaca_short") -> str:
    """The prompt of one example, with ``output`` appended when given (``Prompter.generate_prompt``)."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; allowed: {', '.join(TEMPLATES)}")
    t = TEMPLATES[template]
    text = (t["prompt_input"].format(instruction=instruction, input=input_text) if input_text
            else t["prompt_no_input"].format(instruction=instruction))
    return text + output


def _ids(tokenizer: Any, text: str, cfg: LMConfig, add_eos: bool) -> list[int]:
    ids = list(tokenizer(text, truncation=True, max_length=cfg.cutoff_len, add_special_tokens=True)["input_ids"])
    if add_eos and ids and ids[-1] != tokenizer.eos_token_id and len(ids) < cfg.cutoff_len:
        ids.append(tokenizer.eos_token_id)
    return ids


def encode_example(tokenizer: Any, instruction: str, output: str, cfg: LMConfig, input_text: str = "") -> dict:
    """One training example -> ``{"input_ids", "labels"}`` (lists), as the authors' ``generate_and_tokenize_prompt``.

    With ``cfg.train_on_inputs`` off, the prompt's tokens (its length measured without EOS) get ``IGNORE``.
    """
    ids = _ids(tokenizer, make_prompt(instruction, input_text, output, cfg.template), cfg, cfg.add_eos)
    labels = list(ids)
    if not cfg.train_on_inputs:
        n_user = len(_ids(tokenizer, make_prompt(instruction, input_text, "", cfg.template), cfg, False))
        labels = [IGNORE] * n_user + labels[n_user:]
    return {"input_ids": ids, "labels": labels}


def encode_prompt(tokenizer: Any, instruction: str, cfg: LMConfig, input_text: str = "") -> list[int]:
    """The prompt alone (for generation): BOS + template, no EOS."""
    return _ids(tokenizer, make_prompt(instruction, input_text, "", cfg.template), cfg, False)


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, label_rows: Sequence[Sequence[int]] | None = None
             ) -> dict[str, torch.Tensor]:
    """Left-pad token rows -> ``input_ids`` (B, L), ``attention_mask`` (B, L) and, if given, ``labels`` (B, L)."""
    n = max(len(r) for r in rows)
    out = {"input_ids": torch.tensor([[pad_id] * (n - len(r)) + list(r) for r in rows], dtype=torch.long),
           "attention_mask": torch.tensor([[0] * (n - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)}
    if label_rows is not None:
        out["labels"] = torch.tensor([[IGNORE] * (n - len(r)) + list(r) for r in label_rows], dtype=torch.long)
    return out


def normalise_answer(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces: the form exact-match accuracy compares."""
    kept = "".join(c if c.isalnum() else " " for c in text.lower())
    return " ".join(kept.split())


def build_word_tokenizer(texts: Iterable[str], min_count: int = 1) -> Any:
    """A word-level tokenizer (lower case, words and punctuation runs) trained on ``texts``, with
    ``<pad>`` 0, ``<s>`` 1, ``</s>`` 2, ``<unk>`` 3; it adds BOS like LLaMA's. Used for the small offline LM.

    Returns:
        a ``transformers`` fast tokenizer (``save_pretrained`` / ``AutoTokenizer.from_pretrained`` round-trip).
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    tok.train_from_iterator(list(texts), trainers.WordLevelTrainer(special_tokens=specials, min_frequency=min_count))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    out = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                  unk_token="<unk>")
    out.padding_side = "left"
    return out
