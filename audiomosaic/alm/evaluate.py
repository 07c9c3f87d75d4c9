"""Scoring generated text: exact-match QA, caption -> label, attribute F1 (issue #13's demonstration).

The authors score zero-shot classification by embedding a generated caption and every label text with a text
encoder (GPT ada-002 or BERT) and taking the most similar label. Offline, the text embedding here is a bag of
words: a label's score is the fraction of its words that occur in the caption, the best-scoring label is the
prediction (ties: the longer label, then alphabetical), and a caption naming no label word is wrong.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Sequence

import torch

from audiomosaic.alm.lm import AudioLM
from audiomosaic.alm.text import normalise_answer


def exact_match(prediction: str, answer: str) -> bool:
    """Equal after lower-casing and dropping punctuation and extra spaces."""
    return normalise_answer(prediction) == normalise_answer(answer)


def _has_phrase(text: str, phrase: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text) is not None


def caption_to_label(caption: str, labels: Sequence[str]) -> str | None:
    """The label whose words best cover ``caption`` (None when no label word occurs in it)."""
    words = set(normalise_answer(caption).split())
    scored = []
    for label in labels:
        lw = normalise_answer(label).split()
        score = sum(w in words for w in lw) / max(1, len(lw))
        if score > 0:
            scored.append((-score, -len(lw), label))
    return min(scored)[2] if scored else None


def mentioned(caption: str, vocab: Mapping[str, Iterable[str]]) -> set[tuple[str, str]]:
    """The (attribute, value) pairs named in ``caption``; a value inside a longer named value of the same
    attribute (``default`` in ``default spanish``) does not count."""
    text = normalise_answer(caption)
    out = set()
    for attr, values in vocab.items():
        hits = [v for v in values if _has_phrase(text, normalise_answer(v))]
        out |= {(attr, v) for v in hits if not any(v != w and _has_phrase(w, v) for w in hits)}
    return out


def attribute_f1(captions: Sequence[str], references: Sequence[Mapping[str, str]],
                 vocab: Mapping[str, Iterable[str]]) -> dict[str, float]:
    """Micro precision, recall and F1 of the attribute values named in each caption against the clip's own."""
    tp = fp = fn = 0
    for cap, ref in zip(captions, references):
        pred, true = mentioned(cap, vocab), {(a, v) for a, v in ref.items() if a in vocab}
        tp, fp, fn = tp + len(pred & true), fp + len(pred - true), fn + len(true - pred)
    p, r = tp / max(1, tp + fp), tp / max(1, tp + fn)
    return {"precision": p, "recall": r, "f1": 2 * tp / max(1, 2 * tp + fp + fn)}


@torch.no_grad()
def answer_all(model: AudioLM, items: Sequence[Mapping[str, Any]], get_specs: Any, batch: int = 64,
               max_new_tokens: int = 12) -> list[str]:
    """Greedy answers to ``items`` (``{"clip", "instruction"}``), batched; the order of ``items`` is kept."""
    model.eval()
    device = model.prefix.proj.weight.device
    out: list[str] = []
    for i in range(0, len(items), batch):
        chunk = items[i:i + batch]
        clips = [it["clip"] for it in chunk]
        spec = (torch.zeros(len(clips), 1, device=device) if model.cfg.audio == "zero"
                else get_specs(clips).to(device))
        out += model.generate(spec, [it["instruction"] for it in chunk], max_new_tokens)
    return out
