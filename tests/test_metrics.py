"""Metrics against scikit-learn / SciPy on random data, and effective rank on matrices of known rank."""
import numpy as np
import pytest
import torch
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn.metrics import accuracy_score, average_precision_score, roc_curve

from audiomosaic import metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_precision_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n, c = 200, 7
    targets = (rng.random((n, c)) < 0.2).astype(float)
    targets[:, 3] = 0  # a class without positives is excluded
    scores = np.round(rng.normal(size=(n, c)) + targets, 1)  # rounding creates tied scores
    ap = metrics.average_precision(scores, targets)
    for k in range(c):
        if k == 3:
            assert np.isnan(ap[k])
        else:
            assert ap[k] == pytest.approx(average_precision_score(targets[:, k], scores[:, k]), abs=1e-12)
    m, excluded = metrics.mean_average_precision(torch.tensor(scores), torch.tensor(targets))
    expected = np.mean([average_precision_score(targets[:, k], scores[:, k]) for k in range(c) if k != 3])
    assert m == pytest.approx(expected, abs=1e-12) and excluded == 1


def test_map_without_any_positive_raises():
    with pytest.raises(ValueError, match="no class"):
        metrics.mean_average_precision(np.zeros((4, 2)), np.zeros((4, 2)))


def test_accuracy_matches_sklearn_for_indices_and_one_hot():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(100, 5))
    labels = rng.integers(0, 5, 100)
    expected = accuracy_score(labels, scores.argmax(1))
    assert metrics.accuracy(scores, labels) == pytest.approx(expected)
    assert metrics.accuracy(scores, np.eye(5)[labels]) == pytest.approx(expected)
    two_hot = np.eye(5)[labels]
    two_hot[0, (labels[0] + 1) % 5] = 1
    with pytest.raises(ValueError, match="exactly one positive"):
        metrics.accuracy(scores, two_hot)


def _eer_reference(labels, scores):
    fpr, tpr, _ = roc_curve(labels, scores)  # the widespread brentq-on-interp1d recipe
    return brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_eer_matches_roc_curve_interpolation(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(size=300) + 1.2 * labels, 2)
    assert metrics.equal_error_rate(scores, labels) == pytest.approx(_eer_reference(labels, scores), abs=1e-6)
    two_col = np.stack([-scores, scores], 1)
    assert metrics.equal_error_rate(two_col, np.eye(2)[labels]) == pytest.approx(_eer_reference(labels, scores),
                                                                                 abs=1e-6)


def test_eer_extremes():
    labels = np.array([0, 0, 1, 1])
    assert metrics.equal_error_rate(np.array([0.1, 0.2, 0.8, 0.9]), labels) == 0.0  # separable
    assert metrics.equal_error_rate(np.array([0.9, 0.8, 0.2, 0.1]), labels) == 1.0  # inverted
    with pytest.raises(ValueError, match="both classes"):
        metrics.equal_error_rate(np.array([0.1, 0.2]), np.array([1, 1]))


@pytest.mark.parametrize("k", [1, 3, 8])
def test_effective_rank_of_k_equal_variance_directions_is_k(k):
    d = 16
    q, _ = np.linalg.qr(np.random.default_rng(k).normal(size=(d, d)))
    directions = q[:, :k].T  # (k, d) orthonormal
    x = np.concatenate([3.0 * directions, -3.0 * directions]) + 5.0  # centred: +-q_i; the offset is removed
    assert metrics.effective_rank(x) == pytest.approx(k, rel=1e-9)


def test_effective_rank_bounds_and_scale_invariance():
    rng = np.random.default_rng(0)
    low = rng.normal(size=(500, 4)) @ rng.normal(size=(4, 32))  # rank 4
    assert 1.0 < metrics.effective_rank(low) <= 4.0 + 1e-9
    x = rng.normal(size=(500, 32))
    assert metrics.effective_rank(x) == pytest.approx(metrics.effective_rank(10 * x), rel=1e-9)
    assert 20.0 < metrics.effective_rank(x) <= 32.0
    assert metrics.effective_rank(np.ones((5, 3))) == 0.0


def test_contrastive_top1_identical_and_random_views():
    z = torch.randn(32, 16, generator=torch.Generator().manual_seed(0))
    assert metrics.contrastive_top1(z, z.clone()) == 1.0
    other = torch.randn(32, 16, generator=torch.Generator().manual_seed(1))
    assert metrics.contrastive_top1(z, other) < 0.5


def test_task_metrics_keys_follow_the_task():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 50)
    scores = rng.normal(size=(50, 2)) + 2 * np.eye(2)[labels]
    single = metrics.task_metrics(scores, np.eye(2)[labels], multi_label=False, eer=True)
    assert set(single) == {"mAP", "mAP_excluded_classes", "accuracy", "eer"}
    assert single["accuracy"] == pytest.approx(metrics.accuracy(scores, labels))
    multi = metrics.task_metrics(scores, np.eye(2)[labels], multi_label=True)
    assert set(multi) == {"mAP", "mAP_excluded_classes"}
    assert metrics.primary_metric(True) == "mAP" and metrics.primary_metric(False) == "accuracy"
