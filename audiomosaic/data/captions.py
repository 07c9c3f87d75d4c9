"""Captions and closed questions from a built corpus' clip metadata (the audio-language demonstration, issue #13).

Every clip of ``metadata.csv`` gets attributes read off its task, label and file name, keeping only attributes
whose values occur in both splits (a held-out group's own name, e.g. a test voice or drum kit, cannot be learned):

- ``kws*``: the spoken ``word`` and the espeak-ng ``accent`` of the voice (voice variants are the held-out group);
- ``inst*``: the instrument ``family``, the pitch ``register`` (MIDI key < 48 low, < 72 middle, else high) and the
  ``loudness`` (velocity < 90 soft, else loud);
- ``drums*``: the ``drum`` class (kits are the held-out group);
- ``speaker*``: the character voice ``pack`` (phrases are the held-out group);
- every clip: its ``category`` (spoken word, instrument note, drum hit, character voice).

From them: one caption, a classification question (the task's label) and one question per attribute, each with
several phrasings; the last phrasing of every question is held out of training, for a novel-phrasing test. The
split is the corpus' own, so the text is held out by the same groups as the audio.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

# Task families by name prefix (the tiny corpus has kws10, the default one kws35, ...).
KINDS = ("kws", "inst", "drums", "speaker")
CATEGORY = {"kws": "spoken word", "inst": "instrument note", "drums": "drum hit", "speaker": "character voice"}
ACCENTS = {"en": "standard", "en-029": "caribbean", "en-gb-scotland": "scottish", "en-gb-x-gbclan": "lancashire",
           "en-gb-x-gbcwmd": "west midlands", "en-gb-x-rp": "received pronunciation", "en-us": "american",
           "en-us-nyc": "new york"}
_PACK_SUFFIX = {"es": "spanish", "pl": "polish", "ru": "russian", "uk": "ukrainian"}

# Question phrasings per attribute ("label": the task's class); the last one of each list is held out.
QUESTIONS: dict[str, list[str]] = {
    "label": ["What is the label of this sound?", "Classify this sound.", "Which class does this audio belong to?",
              "Identify the class of the sound you hear."],
    "category": ["What kind of sound is this?", "Which type of audio is this?",
                 "Tell me the type of this sound."],
    "word": ["Which word is spoken?", "What word does the speaker say?", "Tell me the spoken word."],
    "accent": ["What accent does the speaker have?", "Which accent of english is this?", "Describe the speaker's accent."],
    "family": ["Which instrument family plays this note?", "What instrument is this?",
               "Name the instrument family."],
    "register": ["Is the note low, middle or high?", "What is the pitch register of the note?",
                 "How high is the pitch?"],
    "loudness": ["Is the note soft or loud?", "How loud is the note?", "Describe the loudness of the note."],
    "drum": ["Which drum is hit?", "What drum sound is this?", "Name the drum."],
    "pack": ["Which character voice is this?", "Whose voice pack is this?", "Name the character voice."],
}
CAPTION_PROMPTS = ["Describe the sound.", "Write an audio caption describing the sound."]  # the last: evaluation
LABEL_ATTR = {"kws": "word", "inst": "family", "drums": "drum", "speaker": "pack"}


def task_kind(task: str) -> str:
    """``kws35`` -> ``kws``, ``inst11`` -> ``inst``, ...; "" for a task of no known family."""
    return next((k for k in KINDS if task.startswith(k)), "")


@dataclass(frozen=True)
class ClipText:
    """One clip's metadata as text: its attributes, caption and questions."""

    file: str  # relative to the corpus root
    task: str
    split: str
    label: str  # the task's class, as text
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def caption(self) -> str:
        a, kind = self.attributes, task_kind(self.task)
        if kind == "kws":
            return f"the word {a['word']} spoken in {a['accent']} english"
        if kind == "inst":
            return f"a {a['loudness']} {a['register']} {a['family']} note"
        if kind == "drums":
            return f"a {a['drum']} drum hit"
        return f"a {a['pack']} character voice"


def _readable(label: str) -> str:
    return label.replace("_", " ").lower()


def _pack(label: str) -> str:
    head, _, tail = label.partition("_")
    return f"{head.lower()} {_PACK_SUFFIX.get(tail, tail.lower())}".strip()


def clip_attributes(task: str, file: str, label: str) -> dict[str, str]:
    """The attributes of one clip (see the module docstring); unknown tasks get only ``category``."""
    name, kind = Path(file).stem, task_kind(task)
    attrs = {"category": CATEGORY.get(kind, task)}
    if kind == "kws":
        attrs.update(word=_readable(label), accent=ACCENTS.get(name.split("+")[0], name.split("+")[0]))
    elif kind == "inst":
        key, vel = (int(re.search(rf"_{c}(\d+)", name).group(1)) for c in "kv")
        attrs.update(family=_readable(label), register="low" if key < 48 else "middle" if key < 72 else "high",
                     loudness="soft" if vel < 90 else "loud")
    elif kind == "drums":
        attrs.update(drum=_readable(label))
    elif kind == "speaker":
        attrs.update(pack=_pack(label))
    return attrs


def read_clips(root: str | Path, tasks: tuple[str, ...] = ()) -> list[ClipText]:
    """Every clip in ``<root>/metadata.csv`` of ``tasks`` (default: every task of a known family) with its
    attributes."""
    out = []
    with open(Path(root) / "metadata.csv", newline="") as f:
        for row in csv.DictReader(f):
            kind = task_kind(row["task"])
            if (row["task"] in tasks) if tasks else kind:
                attrs = clip_attributes(row["task"], row["file"], row["label"])
                out.append(ClipText(row["file"], row["task"], row["split"], attrs[LABEL_ATTR[kind]], attrs))
    return out


def questions(clip: ClipText, held_out: bool) -> list[dict[str, str]]:
    """The clip's closed questions: ``{"kind", "attribute", "instruction", "output", "phrasing"}``.

    Args:
        held_out: False: every phrasing but the last (training); True: only the last (novel-phrasing test).
    """
    # the label question stands for the task's own attribute (kws35's word, ...), which is not asked twice
    own = LABEL_ATTR.get(task_kind(clip.task))
    attrs = {"label": clip.label, **{k: v for k, v in clip.attributes.items() if k != own}}
    out = []
    for attr, value in attrs.items():
        phrasings = QUESTIONS[attr][-1:] if held_out else QUESTIONS[attr][:-1]
        kind = "cla" if attr == "label" else "closed"
        out += [{"kind": kind, "attribute": attr, "instruction": q, "output": value,
                 "phrasing": "held_out" if held_out else "seen"} for q in phrasings]
    return out


def caption_examples(clip: ClipText, held_out: bool = False) -> list[dict[str, str]]:
    """Open-ended examples: the caption under each caption prompt (the last one held out for evaluation)."""
    prompts = CAPTION_PROMPTS[-1:] if held_out else CAPTION_PROMPTS[:-1]
    return [{"kind": "open", "attribute": "caption", "instruction": p, "output": clip.caption,
             "phrasing": "held_out" if held_out else "seen"} for p in prompts]


def stage_examples(clip: ClipText, data: str) -> list[dict[str, str]]:
    """The training examples of one clip for a stage's data: ``cla`` (classification), ``closed`` (every closed
    question) or ``mix`` (closed + captions), seen phrasings only."""
    qs = questions(clip, held_out=False)
    if data == "cla":
        return [q for q in qs if q["kind"] == "cla"]
    if data == "closed":
        return qs
    if data == "mix":
        return qs + caption_examples(clip)
    raise ValueError(f"data={data!r}; allowed: cla, closed, mix")


def attribute_values(clips: list[ClipText]) -> dict[str, set[str]]:
    """Every value each attribute takes in ``clips`` (what caption scoring looks for)."""
    out: dict[str, set[str]] = {}
    for c in clips:
        for k, v in c.attributes.items():
            out.setdefault(k, set()).add(v)
    return out
