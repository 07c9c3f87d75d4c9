"""Scoring and tables of the audio-language demonstration (audiomosaic.alm.evaluate / report): no LM needed."""
from __future__ import annotations

import pandas as pd
import pytest

from audiomosaic.alm.evaluate import attribute_f1, caption_to_label, exact_match, mentioned
from audiomosaic.alm.report import summary_table, verdict


def test_scoring_of_answers_and_captions():
    assert exact_match("  Synth-Lead. ", "synth lead") and not exact_match("lead", "synth lead")
    labels = ["lead", "synth lead", "bass"]
    assert caption_to_label("a soft high synth lead note", labels) == "synth lead"
    assert caption_to_label("a drum hit", labels) is None
    vocab = {"pack": ["default", "default spanish"], "register": ["low", "high"]}
    assert mentioned("a default spanish character voice", vocab) == {("pack", "default spanish")}
    f1 = attribute_f1(["a low default voice"], [{"register": "high", "pack": "default"}], vocab)
    assert f1 == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})


def test_summary_verdicts_need_an_interval_that_excludes_zero():
    rows = [{"condition": c, "seed": s, "metric": "qa_seen", "value": v}
            for s, (p, r, n) in enumerate([(0.5, 0.3, 0.2), (0.6, 0.35, 0.2), (0.55, 0.3, 0.21)])
            for c, v in (("pretrained", p), ("random_init", r), ("no_audio", n))]
    rows += [{"condition": c, "seed": s, "metric": "caption_label", "value": v}
             for s, (p, r) in enumerate([(0.1, 0.2), (0.3, 0.1), (0.2, 0.2)])
             for c, v in (("pretrained", p), ("random_init", r), ("no_audio", 0.0))]
    t = summary_table(pd.DataFrame(rows)).set_index("metric")
    assert t.loc["qa_seen", "verdict_vs_random_init"] == "reproduced" and t.loc["qa_seen", "n_seeds"] == 3
    assert t.loc["qa_seen", "diff_vs_no_audio"] == pytest.approx(0.55 - 0.61 / 3)
    assert t.loc["caption_label", "verdict_vs_random_init"] == "inconclusive"
    assert (verdict(-0.3, -0.1), verdict(-0.1, 0.2), verdict(0.1, 0.2)) == ("contradicted", "inconclusive",
                                                                             "reproduced")
