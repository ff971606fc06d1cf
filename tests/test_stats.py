"""The statistics of transmission: planted effects are covered and found, null effects are not, and the
tests hold their nominal error rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from sublim.stats import MIXED, QUESTIONS, RUNS, compare, rate_interval, sign_flip_pvalue


def simulate(rng, runs: int, rate: float, run_sd: float = 0.0, questions: int = 20, samples: int = 20):
    """Per-question rates of one condition: each run's true rate shifted by run_sd, binomial answers."""
    rows = []
    for _ in range(runs):
        p = float(np.clip(rate + rng.normal(0, run_sd), 0, 1))
        rows.append(rng.binomial(samples, p, size=questions) / samples)
    return np.array(rows)


def test_welch_matches_scipy_on_run_means():
    rng = np.random.default_rng(0)
    a, b = simulate(rng, 3, 0.3, 0.05), simulate(rng, 4, 0.2, 0.05)
    estimate = compare(a, b)
    reference = st.ttest_ind(a.mean(1), b.mean(1), equal_var=False, alternative="greater")
    assert estimate.method == RUNS
    assert estimate.p == pytest.approx(reference.pvalue)
    two_sided = st.ttest_ind(a.mean(1), b.mean(1), equal_var=False).confidence_interval(0.95)
    assert (estimate.lo, estimate.hi) == pytest.approx((two_sided.low, two_sided.high))


@pytest.mark.parametrize(("runs_a", "runs_b", "method"), [(3, 3, RUNS), (3, 1, MIXED), (1, 3, MIXED), (1, 1, QUESTIONS)])
def test_planted_effect_is_covered_and_significant(runs_a, runs_b, method):
    rng = np.random.default_rng(1)
    a = simulate(rng, runs_a, 0.45, run_sd=0.03)
    b = simulate(rng, runs_b, 0.15, run_sd=0.03)
    estimate = compare(a, b, seed=1)
    assert estimate.method == method
    assert estimate.lo <= 0.30 <= estimate.hi
    assert estimate.p < 0.01


@pytest.mark.parametrize(("runs_a", "runs_b"), [(3, 3), (2, 2), (3, 1), (1, 1)])
def test_tests_hold_their_level_under_no_effect(runs_a, runs_b):
    # Under "no difference" a p-value below 0.05 must come about 5 % of the time and the interval must
    # cover 0 about 95 % of the time; 400 null data sets put the rate within ±3.3 points at 3 SE.
    rng = np.random.default_rng(2)
    small, covered = 0, 0
    trials = 400
    for i in range(trials):
        a = simulate(rng, runs_a, 0.1, run_sd=0.02 if runs_a > 1 else 0.0)
        b = simulate(rng, runs_b, 0.1, run_sd=0.02 if runs_b > 1 else 0.0)
        estimate = compare(a, b, seed=i)
        small += estimate.p < 0.05
        covered += estimate.lo <= 0 <= estimate.hi
    assert small / trials <= 0.05 + 0.033
    assert covered / trials >= 0.95 - 0.033


def test_sign_flip_is_exact_for_few_questions():
    # 4 positive differences, all 2^4 sign patterns equally likely: only "all +" reaches the observed sum
    assert sign_flip_pvalue([0.1, 0.2, 0.3, 0.4]) == pytest.approx(1 / 16)
    assert sign_flip_pvalue([0, 0, 0]) == 1.0
    assert sign_flip_pvalue([-0.1, -0.2]) == 1.0
    # Monte Carlo above 16 questions: 30 differences of +0.1 → p ≈ 2^-30, floored at 1/(draws + 1)
    assert sign_flip_pvalue([0.1] * 30, seed=0) < 1e-4


def test_animal_never_named_gives_no_evidence():
    zeros = np.zeros((3, 20))
    estimate = compare(zeros, zeros)
    assert (estimate.value, estimate.lo, estimate.hi, estimate.p) == (0, 0, 0, 1.0)
    assert compare(zeros[:1], zeros[:1]).p == 1.0


def test_rate_interval_uses_runs_when_there_are_some():
    rng = np.random.default_rng(4)
    runs = simulate(rng, 3, 0.3, 0.05)
    estimate = rate_interval(runs)
    assert estimate.method == RUNS
    means = runs.mean(1)
    half = st.t.ppf(0.975, 2) * means.std(ddof=1) / math.sqrt(3)
    assert (estimate.lo, estimate.hi) == pytest.approx((means.mean() - half, means.mean() + half))
    single = rate_interval(runs[0])
    assert single.method == QUESTIONS
    assert 0 <= single.lo <= single.value <= single.hi <= 1


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="different numbers of questions"):
        compare(np.zeros((2, 5)), np.zeros((2, 6)))
    with pytest.raises(ValueError, match="NaN"):
        compare(np.array([[0.1, np.nan]]), np.zeros((1, 2)))
