"""Evaluation metrics: mAP, accuracy, EER (interpolated and the authors' ROC-point mode), AUC, contrastive top-1
and effective rank (docs/method.md §8, §10, Decision 4).

Pure functions of arrays or tensors (moved to CPU numpy in float64); no model, config or device logic. Scores are
(N, C) logits or probabilities (any monotone transform of a column gives the same AP/EER), targets are (N, C)
multi-hot 0/1 or (N,) class indices.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from audiomosaic.losses import contrastive_accuracy, nt_xent_logits

ArrayLike = np.ndarray | torch.Tensor


def _np(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _binary_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (tp, fp) counts at each distinct score threshold, highest score first."""
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], positive[order].astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of every run of tied scores
    tp = np.cumsum(y)[last]
    return tp, (last + 1) - tp


def average_precision(scores: ArrayLike, targets: ArrayLike) -> np.ndarray:
    """Per-class average precision, sum_n (R_n - R_{n-1}) P_n over distinct thresholds (sklearn's definition).

    Args:
        scores: (N, C) or (N,) scores.
        targets: same shape, multi-hot; values > 0.5 count as positive.
    Returns:
        (C,) AP per class; NaN for a class without positives.
    """
    s, t = _np(scores), _np(targets) > 0.5
    if s.ndim == 1:
        s, t = s[:, None], t[:, None]
    if s.shape != t.shape:
        raise ValueError(f"scores {s.shape} and targets {t.shape} must have the same shape")
    out = np.full(s.shape[1], np.nan)
    for c in range(s.shape[1]):
        if not t[:, c].any():
            continue
        tp, fp = _binary_curve(s[:, c], t[:, c])
        precision, recall = tp / (tp + fp), tp / tp[-1]
        out[c] = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return out


def mean_average_precision(scores: ArrayLike, targets: ArrayLike) -> tuple[float, int]:
    """mAP over the classes with at least one positive (AudioSet convention, docs/method.md §8).

    Returns:
        (mAP, number of classes excluded because they have no positive in ``targets``).
    """
    ap = average_precision(scores, targets)
    valid = ~np.isnan(ap)
    if not valid.any():
        raise ValueError("mAP is undefined: no class has a positive target")
    return float(ap[valid].mean()), int((~valid).sum())


def labels_from_targets(targets: ArrayLike) -> np.ndarray:
    """(N,) class indices from (N,) indices or (N, C) one-hot rows (exactly one positive per row)."""
    t = _np(targets)
    if t.ndim == 1:
        return t.astype(np.int64)
    pos = t > 0.5
    counts = pos.sum(axis=1)
    if (counts != 1).any():
        bad = int(np.flatnonzero(counts != 1)[0])
        raise ValueError(f"accuracy needs exactly one positive per row; row {bad} has {int(counts[bad])}")
    return pos.argmax(axis=1)


def accuracy(scores: ArrayLike, targets: ArrayLike) -> float:
    """Single-label top-1 accuracy: argmax of (N, C) scores against (N,) indices or (N, C) one-hot targets."""
    s = _np(scores)
    return float((s.argmax(axis=1) == labels_from_targets(targets)).mean())


def equal_error_rate(scores: ArrayLike, labels: ArrayLike) -> float:
    """EER with class 1 positive: where FPR = FNR on the piecewise-linear ROC curve (linear interpolation).

    Args:
        scores: (N,) score of class 1, or (N, 2) scores (column 1 is used; use log-probabilities or
            probabilities, not raw two-column logits of a softmax model, when the column offset matters).
        labels: (N,) 0/1, or (N, 2) one-hot.
    """
    s, y = _np(scores), _np(labels)
    s = s[:, 1] if s.ndim == 2 else s
    y = (y[:, 1] if y.ndim == 2 else y) > 0.5
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"EER needs both classes; got {n_pos} positives and {n_neg} negatives")
    tp, fp = _binary_curve(s, y)
    fpr = np.r_[0.0, fp / n_neg]
    fnr = 1.0 - np.r_[0.0, tp / n_pos]
    d = fnr - fpr  # +1 at the origin, -1 at (1, 1): it crosses zero once (both rates are monotone)
    i = int(np.flatnonzero(d <= 0)[0])
    if d[i] == 0:
        return float(fpr[i])
    w = d[i - 1] / (d[i - 1] - d[i])  # linear interpolation between ROC points i-1 and i
    return float(fpr[i - 1] + w * (fpr[i] - fpr[i - 1]))


def eer_roc(scores: ArrayLike, labels: ArrayLike) -> tuple[float, float]:
    """EER as the authors compute it (their ``engine_finetune.evaluate``): sklearn's ``roc_curve`` with class 1
    positive, EER = fpr[argmin |fnr - fpr|] over the curve's points, no interpolation.

    Differs from :func:`equal_error_rate` (the interpolated crossing) by at most the ROC step there.

    Args:
        scores: (N,) score of class 1, or (N, 2) (column 1 is used: pass softmax probabilities, as the authors).
        labels: (N,) 0/1, or (N, 2) one-hot.
    Returns:
        (EER, the threshold at that point).
    """
    from sklearn.metrics import roc_curve  # imported here: sklearn costs ~1-2 s, which every CLI start would pay

    s, y = _binary(scores, labels)
    fpr, tpr, thresholds = roc_curve(y, s, pos_label=1)
    i = int(np.nanargmin(np.abs((1.0 - tpr) - fpr)))
    return float(fpr[i]), float(thresholds[i])


def roc_auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve (class 1 positive), sklearn's ``roc_curve`` + trapezoidal ``auc`` as the authors."""
    from sklearn.metrics import auc, roc_curve

    s, y = _binary(scores, labels)
    fpr, tpr, _ = roc_curve(y, s, pos_label=1)
    return float(auc(fpr, tpr))


def _binary(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(N,) class-1 scores and (N,) 0/1 labels from 1-D or two-column inputs; both classes required."""
    s, y = _np(scores), _np(labels)
    s = s[:, 1] if s.ndim == 2 else s
    y = ((y[:, 1] if y.ndim == 2 else y) > 0.5).astype(np.int64)
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} must have the same length")
    if y.min() == y.max():
        raise ValueError(f"EER/AUC need both classes; got only class {int(y[0]) if y.size else '(empty)'}")
    return s, y


def spoof_metrics(scores: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """``eer`` (authors' mode), ``eer_interp`` (interpolated), ``auc`` and counts for one binary test set."""
    s, y = _binary(scores, labels)
    return {"eer": eer_roc(s, y)[0], "eer_interp": equal_error_rate(s, y), "auc": roc_auc(s, y),
            "n": int(y.size), "n_pos": int(y.sum()), "n_neg": int(y.size - y.sum())}


def evaluate_sets(sets: dict[str, tuple], bonafide: int = 1) -> list[dict]:
    """Per-set and per-generator EER/AUC rows for several test sets (EnvSDD test01-04 style).

    Args:
        sets: ``{name: (scores (N,) of class 1, labels (N,) 0/1, generators (N,) or None)}``; ``generators``
            names the generator of each fake; the value on bona fide items is ignored.
        bonafide: the label of bona fide items (the kit's spoof manifests: 1, the AASIST convention).
    Returns:
        One dict per set (``generator`` = "all") followed, when generators are given, by one per generator: that
        generator's fakes against every bona fide item of the set. Keys: ``set``, ``generator`` and those of
        :func:`spoof_metrics` (EER/AUC always with class 1 positive, as the authors).
    """
    rows = []
    for name, entry in sets.items():
        scores, labels, gens = (tuple(entry) + (None,))[:3]
        s, y = _binary(scores, labels)
        rows.append({"set": name, "generator": "all", **spoof_metrics(s, y)})
        if gens is None:
            continue
        g, real = np.array([str(x) for x in gens], dtype=object), y == bonafide
        if g.shape != y.shape:
            raise ValueError(f"set {name!r}: {g.shape[0]} generator ids for {y.shape[0]} items")
        for gen in sorted(set(g[~real])):
            keep = real | (g == gen)
            rows.append({"set": name, "generator": gen, **spoof_metrics(s[keep], y[keep])})
    return rows


def contrastive_top1(z_a: torch.Tensor, z_b: torch.Tensor, tau: float = 0.1) -> float:
    """Fraction of the 2n anchors whose most similar candidate (of 2n - 1) is their other view (docs/method.md §6)."""
    logits, target = nt_xent_logits(z_a, z_b, tau)
    return float(contrastive_accuracy(logits, target))


def effective_rank(features: ArrayLike) -> float:
    """exp(H(p)) with p_i = sigma_i / sum_j sigma_j, sigma the singular values of the centred (N, D) features.

    docs/method.md Decision 4 (Roy & Vetterli 2007). k orthogonal equal-variance directions give exactly k.
    """
    x = _np(features)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"effective rank needs an (N >= 2, D) matrix, got shape {x.shape}")
    sigma = np.linalg.svd(x - x.mean(axis=0, keepdims=True), compute_uv=False)
    total = sigma.sum()
    if total <= 0:
        return 0.0  # all rows identical: rank 0
    p = sigma[sigma > 0] / total
    return float(math.exp(-np.sum(p * np.log(p))))


def task_metrics(scores: ArrayLike, targets: ArrayLike, multi_label: bool, eer: bool = False) -> dict[str, float]:
    """The metrics a labelled task reports: mAP always, accuracy for single-label, EER for binary if asked.

    Args:
        scores: (N, C) logits.
        targets: (N, C) multi-hot.
        multi_label: the task's flag; single-label tasks add ``accuracy``.
        eer: add ``eer`` (needs C == 2; uses softmax/sigmoid of column 1).
    """
    s = _np(scores)
    out: dict[str, float] = {}
    m, excluded = mean_average_precision(s, targets)
    out["mAP"], out["mAP_excluded_classes"] = m, excluded
    if not multi_label:
        out["accuracy"] = accuracy(s, targets)
    if eer:
        if s.shape[1] != 2:
            raise ValueError(f"EER needs a binary task (2 classes), got {s.shape[1]}")
        z = s - s.max(axis=1, keepdims=True)
        prob = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True) if not multi_label else 1 / (1 + np.exp(-s))
        out["eer"] = equal_error_rate(prob[:, 1], targets)
    return out


def primary_metric(multi_label: bool, eer: bool = False) -> str:
    """The headline metric of a task: ``eer`` if asked, else mAP (multi-label) or accuracy (single-label)."""
    return "eer" if eer else ("mAP" if multi_label else "accuracy")
