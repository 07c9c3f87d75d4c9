"""EER in the authors' mode (sklearn roc_curve, no interpolation), AUC and the multi-test-set helper."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from audiomosaic.metrics import equal_error_rate, eer_roc, evaluate_sets, roc_auc, spoof_metrics


def _authors(scores, labels):
    fpr, tpr, _ = roc_curve(labels, scores, pos_label=1)
    return fpr[np.nanargmin(np.abs((1 - tpr) - fpr))]


def test_hand_computed_cases():
    # Perfect separation: the ROC reaches (0, 1), EER 0, AUC 1.
    assert eer_roc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])[0] == 0.0
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    # Fully inverted: EER 1, AUC 0.
    assert eer_roc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1])[0] == 1.0
    # 2 positives {0.9, 0.3}, 2 negatives {0.6, 0.1}. ROC points (fpr, tpr): (0,0) (0,.5) (.5,.5) (.5,1) (1,1).
    # |fnr - fpr| is 1, .5, 0, .5, 1 -> EER = fpr at (.5, .5) = 0.5; interpolation gives the same here.
    s, y = [0.9, 0.6, 0.3, 0.1], [1, 0, 1, 0]
    assert eer_roc(s, y) == (0.5, 0.6)
    assert equal_error_rate(s, y) == pytest.approx(0.5)
    assert roc_auc(s, y) == 0.75
    # 1 positive at 0.5, 3 negatives {0.9, 0.4, 0.1}: points (0,0) (1/3,0) (1/3,1) (1,1); |fnr - fpr| is
    # 1, 4/3, 1/3, 1 -> the authors' EER is 1/3, while the interpolated crossing lies on the vertical segment.
    s, y = [0.9, 0.5, 0.4, 0.1], [0, 1, 0, 0]
    assert eer_roc(s, y)[0] == pytest.approx(1 / 3)
    assert equal_error_rate(s, y) == pytest.approx(1 / 3)


def test_not_interpolated_where_the_modes_differ():
    # 2 positives {0.9, 0.1}, 4 negatives (three tied at 0.5, one at 0.05). ROC points (fpr, tpr): (0,0) (0,.5)
    # (.75,.5) (.75,1) (1,1); fnr - fpr: 1, .5, -.25, -.75, -1. The authors take the point with the smallest
    # |fnr - fpr|: fpr .75; the interpolated crossing is 2/3 of the way along the horizontal step: fpr .5.
    s, y = [0.9, 0.5, 0.5, 0.5, 0.1, 0.05], [1, 0, 0, 0, 1, 0]
    assert eer_roc(s, y)[0] == pytest.approx(0.75)
    assert equal_error_rate(s, y) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(5))
def test_against_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    s = rng.normal(size=300) + 1.2 * y
    s[:40] = np.round(s[:40], 1)  # some ties
    assert eer_roc(s, y)[0] == _authors(s, y)
    assert roc_auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    # Two-column probabilities (column 1 used) and one-hot labels give the same.
    p = np.stack([1 - 1 / (1 + np.exp(-s)), 1 / (1 + np.exp(-s))], axis=1)
    assert eer_roc(p, np.eye(2)[y])[0] == eer_roc(p[:, 1], y)[0]
    m = spoof_metrics(s, y)
    assert abs(m["eer"] - m["eer_interp"]) <= 1.0 / min(m["n_pos"], m["n_neg"]) + 1e-12


def test_one_class_is_an_error():
    with pytest.raises(ValueError, match="both classes"):
        eer_roc([0.1, 0.2], [1, 1])


def test_evaluate_sets_per_set_and_generator():
    # Set A: bona fide (1) scores high; generator g1 fakes are easy, g2 fakes overlap the bona fide.
    s = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.85, 0.75])
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    g = ["", "", "", "g1", "g1", "g2", "g2"]
    rows = evaluate_sets({"test01": (s, y, g), "test02": (s, y)})
    assert [(r["set"], r["generator"]) for r in rows] == [("test01", "all"), ("test01", "g1"), ("test01", "g2"),
                                                        ("test02", "all")]
    by = {(r["set"], r["generator"]): r for r in rows}
    assert by["test01", "g1"]["eer"] == 0.0 and by["test01", "g1"]["auc"] == 1.0
    assert by["test01", "g1"]["n"] == 5 and by["test01", "g2"]["n_neg"] == 2
    assert by["test01", "g2"]["eer"] > 0
    assert by["test01", "all"]["eer"] == _authors(s, y) == by["test02", "all"]["eer"]
    with pytest.raises(ValueError, match="generator ids"):
        evaluate_sets({"x": (s, y, g[:3])})
