"""Captions and questions from clip metadata (audiomosaic.data.captions): attributes, held-out phrasings."""
from __future__ import annotations

from audiomosaic.data.captions import (QUESTIONS, ClipText, caption_examples, clip_attributes, questions,
                                       stage_examples, task_kind)


def test_attributes_from_file_names():
    assert clip_attributes("kws35", "kws35/train/happy/en-us-nyc+robert_0.wav", "happy") == {
        "category": "spoken word", "word": "happy", "accent": "new york"}
    assert clip_attributes("inst11", "inst11/test/bass/Merlin_p035_k028_v060.wav", "bass") == {
        "category": "instrument note", "family": "bass", "register": "low", "loudness": "soft"}
    assert clip_attributes("inst11", "x/TimGM6mb_p052_k072_v110.wav", "synth_lead")["register"] == "high"
    assert clip_attributes("speaker15", "speaker15/train/Default_es/ow4.wav", "Default_es")["pack"] == "default spanish"
    assert clip_attributes("drums7", "drums7/test/hand_perc/k__t.wav", "hand_perc")["drum"] == "hand perc"
    assert task_kind("kws10") == "kws" and task_kind("esc50") == ""


def test_held_out_phrasings_never_train():
    clip = ClipText("inst11/x/M_p001_k060_v110.wav", "inst11", "train", "bass",
                    clip_attributes("inst11", "inst11/x/M_p001_k060_v110.wav", "bass"))
    assert clip.caption == "a loud middle bass note"
    train = {e["instruction"] for e in stage_examples(clip, "mix")}
    novel = {q["instruction"] for q in questions(clip, held_out=True)} | {
        e["instruction"] for e in caption_examples(clip, held_out=True)}
    assert train and novel and not train & novel
    assert {q["attribute"] for q in questions(clip, False)} == {"label", "category", "register", "loudness"}
    assert all(e["kind"] == "cla" for e in stage_examples(clip, "cla"))
    assert all(len(v) >= 3 for v in QUESTIONS.values())
