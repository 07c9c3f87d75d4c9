"""Small-sample statistics for the reproduction suites: seed means, t-intervals and paired tests.

Pure functions of 1-D sequences of floats (numpy float64 inside). The t distribution comes from
``scipy.special`` (``stdtr``/``stdtrit``); everything else (the paired t statistic, the exact Wilcoxon
signed-rank null distribution by enumeration, the sign-flip permutation test, Holm's step-down correction) is
computed here so that ``tests/test_stats.py`` can check it against ``scipy.stats``.

Why both a t-test and rank/permutation tests: with 3 seeds the t-test leans on normality, while an exact test over
(seed, task) pairs needs no distributional assumption; the claims table names the test behind every p-value.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import special

MAX_EXACT = 20  # the sign-flip test enumerates 2**n sign patterns up to this many pairs (~1e6)


@dataclass(frozen=True)
class Summary:
    """Mean and two-sided t-interval of n values (``half_width`` is NaN for n < 2)."""

    n: int
    mean: float
    sd: float
    half_width: float
    confidence: float

    @property
    def lo(self) -> float:
        return self.mean - self.half_width

    @property
    def hi(self) -> float:
        return self.mean + self.half_width

    def format(self, digits: int = 3) -> str:
        """``0.512 ± 0.031`` (or ``0.512`` when n < 2)."""
        if math.isnan(self.half_width):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"


@dataclass(frozen=True)
class TestResult:
    """A two-sided paired test of ``a - b``: statistic, p-value, the mean difference and its t-interval."""

    test: str
    n: int
    statistic: float
    p_value: float
    mean_diff: float
    ci_lo: float
    ci_hi: float


def _vec(values: Sequence[float], name: str = "values") -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains non-finite values: {x.tolist()}")
    return x


def t_quantile(q: float, df: int) -> float:
    """The q-quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"t quantile needs df >= 1, got {df}")
    return float(special.stdtrit(df, q))


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Mean, sample sd (ddof=1) and the half-width t_{(1+c)/2, n-1} * sd / sqrt(n) of the mean's interval."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence} is outside (0, 1)")
    x = _vec(values)
    n = x.size
    if n < 2:
        return Summary(n, float(x.mean()), float("nan"), float("nan"), confidence)
    sd = float(x.std(ddof=1))
    half = t_quantile((1.0 + confidence) / 2.0, n - 1) * sd / math.sqrt(n)
    return Summary(n, float(x.mean()), sd, half, confidence)


def _paired(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    x, y = _vec(a, "a"), _vec(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.size} vs {y.size}")
    return x - y


def paired_t_test(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> TestResult:
    """Two-sided paired t-test of mean(a - b) = 0 (pairs: same seed, or same (seed, task)).

    Raises:
        ValueError: fewer than 2 pairs, or unequal lengths.
    """
    d = _paired(a, b)
    n = d.size
    if n < 2:
        raise ValueError(f"a paired t-test needs >= 2 pairs, got {n}")
    s = summarize(d, confidence)
    se = s.sd / math.sqrt(n)
    if se == 0.0:  # every difference identical: the statistic is +-inf (or undefined if all zero)
        t = math.copysign(math.inf, s.mean) if s.mean != 0.0 else math.nan
        p = 0.0 if s.mean != 0.0 else 1.0
    else:
        t = s.mean / se
        p = float(2.0 * special.stdtr(n - 1, -abs(t)))
    return TestResult("paired t-test", n, float(t), min(p, 1.0), s.mean, s.lo, s.hi)


def _signed_rank_pmf(ranks: np.ndarray) -> np.ndarray:
    """P(W+ = k / 2), k = 0 .. 2 sum(ranks): the exact null of W+ over the 2**n equally likely sign patterns.

    Dynamic programming over the doubled ranks (average ranks of ties are multiples of 1/2, so 2 x rank is an
    integer): each rank joins W+ or not with probability 1/2. O(n x sum of ranks) instead of 2**n patterns.
    """
    r2 = np.rint(2.0 * ranks).astype(np.int64)
    pmf = np.zeros(int(r2.sum()) + 1)
    pmf[0] = 1.0
    for r in r2:
        nxt = 0.5 * pmf
        nxt[r:] += 0.5 * pmf[:pmf.size - r]
        pmf = nxt
    return pmf


def wilcoxon_signed_rank(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> TestResult:
    """Exact two-sided Wilcoxon signed-rank test of the pairs' differences (zero differences dropped, tied
    magnitudes get average ranks; the null distribution of W+ is computed exactly by dynamic programming).

    The statistic is W+ (sum of the ranks of positive differences); p = min(1, 2 min(P(W <= w), P(W >= w))).
    The reported interval is the t-interval of the mean difference, for reading alongside.

    Raises:
        ValueError: unequal lengths.
    """
    d = _paired(a, b)
    s = summarize(d, confidence) if d.size >= 2 else summarize(np.r_[d, d], confidence)
    nz = d[d != 0.0]
    if nz.size == 0:
        return TestResult("Wilcoxon signed-rank (exact)", int(d.size), 0.0, 1.0, s.mean, s.lo, s.hi)
    ranks = _average_ranks(np.abs(nz))
    w = float(ranks[nz > 0].sum())
    pmf, k = _signed_rank_pmf(ranks), int(round(2.0 * w))
    p = 2.0 * min(pmf[:k + 1].sum(), pmf[k:].sum())
    return TestResult("Wilcoxon signed-rank (exact)", int(d.size), w, float(min(p, 1.0)), s.mean, s.lo, s.hi)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x`` with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(x.size)
    sorted_x = x[order]
    i = 0
    while i < x.size:
        j = i
        while j + 1 < x.size and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def sign_flip_test(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> TestResult:
    """Exact paired permutation (sign-flip) test of mean(a - b) = 0: the p-value is the fraction of the 2**n
    sign patterns whose |mean| is at least the observed one.

    Raises:
        ValueError: more than ``MAX_EXACT`` pairs, or unequal lengths.
    """
    d = _paired(a, b)
    if d.size > MAX_EXACT:
        raise ValueError(f"exact sign-flip test limited to {MAX_EXACT} pairs, got {d.size}")
    s = summarize(d, confidence) if d.size >= 2 else summarize(np.r_[d, d], confidence)
    signs = np.array(list(itertools.product((-1.0, 1.0), repeat=d.size)))  # (2**n, n)
    null = np.abs(signs @ d) / d.size
    obs = abs(float(d.mean()))
    p = float(np.mean(null >= obs - 1e-12 * max(1.0, obs)))
    return TestResult("sign-flip permutation (exact)", int(d.size), float(d.mean()), p, s.mean, s.lo, s.hi)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order."""
    p = _vec(p_values, "p_values")
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
    order = np.argsort(p, kind="mergesort")
    m = p.size
    adjusted = np.empty(m)
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


# ------------------------------------------------------------------------------------------------ verdicts

ALPHA = 0.05
VERDICTS = ("reproduced", "contradicted", "inconclusive")


def verdict(row: Mapping[str, Any], higher: bool = True, margin: float | None = None) -> str:
    """One of :data:`VERDICTS` (or "not run"), from the Holm p and the 95 % interval of the difference a − b.

    *reproduced*: the paper's direction, Holm p < ALPHA and the interval excludes 0 on that side; *contradicted*:
    the interval excludes the paper's direction, or lies inside ±``margin`` (equivalence by two one-sided tests at
    2.5 % each, a margin fixed before the runs); *inconclusive*: everything else."""
    if row.get("verdict") == "not run":
        return "not run"
    lo, hi = row.get("diff_ci_lo", math.nan), row.get("diff_ci_hi", math.nan)
    if math.isnan(lo) or math.isnan(hi):
        return "inconclusive"  # one seed: no interval
    paper_lo, paper_hi = (lo, hi) if higher else (-hi, -lo)  # oriented so that the paper predicts > 0
    if row["agrees"] and row["p_holm"] < ALPHA and paper_lo > 0:
        return "reproduced"
    if paper_hi < 0 or (margin is not None and -margin < lo and hi < margin):
        return "contradicted"
    return "inconclusive"


def paired_t_power(n: int, sd_diff: float, delta: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test at level ``alpha`` with ``n`` pairs, when the true mean difference is
    ``delta`` and the differences' s.d. is ``sd_diff`` (non-central t; ``special.nctdtr`` is its CDF)."""
    if n < 2:
        return float("nan")
    df, crit = n - 1, t_quantile(1 - alpha / 2, n - 1)
    nc = delta / (sd_diff / math.sqrt(n)) if sd_diff > 0 else math.inf
    if math.isinf(nc):
        return 1.0
    return float(1.0 - special.nctdtr(df, nc, crit) + special.nctdtr(df, nc, -crit))


def seeds_needed(sd_diff: float, delta: float, alpha: float = ALPHA, power: float = 0.8, max_n: int = 1000) -> int:
    """The fewest seeds (pairs) for which the paired t-test detects a true difference ``delta`` with ``power``;
    ``max_n + 1`` when none up to ``max_n`` does. Why: the pre-registration sizes the seed count from the pilot's
    seed-to-seed s.d. of the paired difference rather than guessing it."""
    for n in range(2, max_n + 1):
        if paired_t_power(n, sd_diff, delta, alpha) >= power:
            return n
    return max_n + 1
