"""Seed statistics against scipy.stats and against small cases worked out by hand."""
import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from audiomosaic.repro.stats import (
    holm,
    paired_t_power,
    paired_t_test,
    seeds_needed,
    sign_flip_test,
    summarize,
    wilcoxon_signed_rank,
)


def _samples(n: int, seed: int, shift: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    b = rng.normal(size=n)
    return b + shift + 0.5 * rng.normal(size=n), b


@pytest.mark.parametrize("n", [2, 3, 5, 12])
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_summary_interval_matches_scipy(n: int, confidence: float) -> None:
    x = np.random.default_rng(n).normal(loc=2.0, size=n)
    s = summarize(x, confidence)
    lo, hi = sps.t.interval(confidence, n - 1, loc=x.mean(), scale=sps.sem(x))
    assert s.n == n and s.mean == pytest.approx(x.mean())
    assert (s.lo, s.hi) == (pytest.approx(lo), pytest.approx(hi))


def test_single_value_has_no_interval() -> None:
    s = summarize([0.7])
    assert s.mean == 0.7 and math.isnan(s.half_width) and s.format() == "0.700"


@pytest.mark.parametrize("n", [3, 4, 9])
def test_paired_t_matches_scipy(n: int) -> None:
    a, b = _samples(n, seed=n)
    ours = paired_t_test(a, b)
    ref = sps.ttest_rel(a, b)
    ci = ref.confidence_interval(0.95)
    assert ours.statistic == pytest.approx(ref.statistic)
    assert ours.p_value == pytest.approx(ref.pvalue)
    assert (ours.ci_lo, ours.ci_hi) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert ours.mean_diff == pytest.approx(np.mean(a - b))


def test_paired_t_constant_difference() -> None:
    assert paired_t_test([2.0, 3.0], [1.0, 2.0]).p_value == 0.0
    assert paired_t_test([1.0, 2.0], [1.0, 2.0]).p_value == 1.0


@pytest.mark.parametrize("n", [3, 6, 9, 12, 27, 40])
@pytest.mark.parametrize("seed", [0, 1])
def test_wilcoxon_matches_scipy_exact(n: int, seed: int) -> None:
    a, b = _samples(n, seed=100 * n + seed, shift=0.2)  # continuous draws: no ties, no zeros
    ours = wilcoxon_signed_rank(a, b)
    d = a - b
    ranks = sps.rankdata(np.abs(d))
    ref = sps.wilcoxon(a, b, method="exact")
    assert ours.statistic == pytest.approx(ranks[d > 0].sum())
    assert ours.p_value == pytest.approx(ref.pvalue)


def test_wilcoxon_with_ties_matches_full_enumeration() -> None:
    # 14 differences with tied magnitudes (half-integer ranks): the DP null equals all 2**14 sign patterns
    d = np.array([0.1, -0.1, 0.2, 0.2, -0.3, 0.3, 0.3, 0.5, -0.6, 0.7, 0.7, -0.7, 0.9, 1.1])
    ranks = sps.rankdata(np.abs(d))
    null = np.array(list(itertools.product((0.0, 1.0), repeat=d.size))) @ ranks
    w = ranks[d > 0].sum()
    p = 2 * min(np.mean(null <= w + 1e-9), np.mean(null >= w - 1e-9))
    assert wilcoxon_signed_rank(d, np.zeros_like(d)).p_value == pytest.approx(min(p, 1.0), rel=1e-12)


def test_wilcoxon_ties_and_zeros_from_first_principles() -> None:
    # differences (0, 1, 2, 2, 3): the zero is dropped; ranks 1, 2.5, 2.5, 4 all positive -> W+ = 10, the
    # maximum of the 2**4 equally likely sign patterns, reached by 1 of 16: p = 2 / 16.
    r = wilcoxon_signed_rank([5, 6, 7, 7, 8], [5, 5, 5, 5, 5])
    assert r.statistic == 10.0 and r.p_value == pytest.approx(2 / 16) and r.n == 5
    assert wilcoxon_signed_rank([1, 2], [1, 2]).p_value == 1.0


@pytest.mark.parametrize("n", [4, 7, 10])
def test_sign_flip_matches_scipy_permutation_test(n: int) -> None:
    a, b = _samples(n, seed=7 * n)
    ours = sign_flip_test(a, b)
    ref = sps.permutation_test((a, b), lambda x, y, axis: np.mean(x - y, axis=axis), vectorized=True,
                               permutation_type="samples", n_resamples=np.inf, alternative="two-sided")
    assert ours.p_value == pytest.approx(ref.pvalue)
    assert ours.statistic == pytest.approx(np.mean(a - b))


def test_holm_worked_example() -> None:
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01, max(0.03, 2 x 0.03), max(0.06, 1 x 0.04); back in input order
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


@pytest.mark.parametrize("call", [
    lambda: summarize([]),
    lambda: summarize([1.0, float("nan")]),
    lambda: summarize([1.0, 2.0], confidence=1.5),
    lambda: paired_t_test([1.0, 2.0], [1.0]),
    lambda: paired_t_test([1.0], [2.0]),
    lambda: wilcoxon_signed_rank([1.0, 2.0], [1.0]),
    lambda: sign_flip_test(np.arange(30.0) + 1, np.zeros(30)),
    lambda: holm([0.2, 1.2]),
])
def test_bad_input_raises(call) -> None:
    with pytest.raises(ValueError):
        call()


@pytest.mark.parametrize("n, sd, delta, alpha", [(10, 1.0, 1.0, 0.05), (5, 0.02, 0.02, 0.0125), (30, 0.05, 0.01, 0.05)])
def test_paired_t_power_matches_scipy_noncentral_t(n: int, sd: float, delta: float, alpha: float) -> None:
    df, nc = n - 1, delta / (sd / math.sqrt(n))
    crit = sps.t.ppf(1 - alpha / 2, df)
    assert paired_t_power(n, sd, delta, alpha) == pytest.approx(sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc),
                                                                rel=1e-9)


def test_seeds_needed_is_the_first_count_with_enough_power() -> None:
    assert seeds_needed(1.0, 1.0) == 10  # effect size 1, two-sided 0.05, power 0.8: the textbook 10 pairs
    n = seeds_needed(0.02, 0.02, alpha=0.0125)
    assert paired_t_power(n, 0.02, 0.02, 0.0125) >= 0.8 > paired_t_power(n - 1, 0.02, 0.02, 0.0125)
    assert seeds_needed(0.01, 0.02) < seeds_needed(0.03, 0.02)  # noisier differences need more seeds
    assert seeds_needed(1.0, 0.001, max_n=50) == 51  # none within reach


@pytest.mark.parametrize("sd", [0.005, 0.01, 0.02, 0.03])
def test_seeds_needed_agrees_with_the_preregistered_formula(sd: float) -> None:
    """paper_figures/README.md sizes the seeds by n >= ((t_0.975,n-1 + t_0.8,n-1) s_d / 0.02)^2, the usual
    approximation of the exact power: the two agree within one seed."""
    formula = next(n for n in range(2, 1000)
                   if n >= ((sps.t.ppf(0.975, n - 1) + sps.t.ppf(0.8, n - 1)) * sd / 0.02) ** 2)
    assert abs(seeds_needed(sd, 0.02) - formula) <= 1
