"""Uncertainty of target-animal rates and of their differences between conditions.

Every function takes a condition's per-question rates as a runs × questions array: row r holds, for
each evaluation question, the fraction of run r's samples that named the animal. Questions are the
protocol's fixed list, so column q means the same question in every array (the comparisons pair them).

Each side's uncertainty comes from the highest level of replication it has:
- two or more runs: the variation of its run means (training seed, data, sampling — everything that
  differs between replications, which is what disagreeing replications show);
- one run (always the untuned base model, or a grid with runs: [1]): the variation across questions.

Differences (`compare`):
- "runs": both sides have ≥ 2 runs → Welch's t on the run means (unequal variances, t quantiles with
  Welch–Satterthwaite degrees of freedom, honest at 3 vs 3 runs where a normal or bootstrap interval
  would be too narrow). One-sided p for "a > b".
- "runs+questions": one side has ≥ 2 runs, the other one run → the same Welch construction, the
  single-run side entering with the standard error of its mean across questions.
- "questions": both sides one run → paired over questions: the interval is a t interval of the
  per-question differences; p is a sign-flip randomisation test over questions (exact up to 16
  questions with a non-zero difference, Monte Carlo above), valid because under "no difference" the two
  students' answers to one question are exchangeable, so each question's difference is symmetric
  about 0. This says whether *these two trained students* differ; variation between training runs
  is not estimable from one run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

LEVEL = 0.95
EXACT_SIGN_FLIP_MAX = 16
MONTE_CARLO_FLIPS = 20_000

RUNS = "runs"
MIXED = "runs+questions"
QUESTIONS = "questions"


@dataclass(frozen=True)
class Estimate:
    """A rate or a difference of rates, with its 95 % interval, standard error and one-sided p."""

    value: float
    lo: float
    hi: float
    se: float
    p: float
    method: str


MISSING = Estimate(math.nan, math.nan, math.nan, math.nan, math.nan, "")


def as_rates(x) -> np.ndarray:
    """A runs × questions float array; a 1-D input is one run."""
    array = np.asarray(x, dtype=float)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"rates must be a non-empty runs × questions array, got shape {array.shape}")
    if np.isnan(array).any():
        raise ValueError("rates contain NaN: every run must have an answer to every question")
    return array


def _t_quantile(df: float) -> float:
    return float(special.stdtrit(df, 0.5 + LEVEL / 2))


def _mean_and_variance(x: np.ndarray) -> tuple[float, float, float]:
    """The side's mean, the variance of that mean, and its degrees of freedom (see module doc)."""
    runs, questions = x.shape
    if runs >= 2:
        means = x.mean(axis=1)
        return float(means.mean()), float(means.var(ddof=1) / runs), runs - 1.0
    row = x[0]
    variance = float(row.var(ddof=1) / questions) if questions >= 2 else math.nan
    return float(row.mean()), variance, questions - 1.0


def rate_interval(x) -> Estimate:
    """One condition's rate: mean over runs and questions, t interval clipped to [0, 1]."""
    x = as_rates(x)
    mean, variance, df = _mean_and_variance(x)
    method = RUNS if x.shape[0] >= 2 else QUESTIONS
    if not variance > 0:
        return Estimate(mean, mean, mean, 0.0 if variance == 0 else math.nan, math.nan, method)
    se = math.sqrt(variance)
    half = _t_quantile(df) * se
    return Estimate(mean, max(0.0, mean - half), min(1.0, mean + half), se, math.nan, method)


def welch(a, b) -> Estimate:
    """a − b from two sides' means and mean variances, Welch–Satterthwaite degrees of freedom."""
    a, b = as_rates(a), as_rates(b)
    mean_a, var_a, df_a = _mean_and_variance(a)
    mean_b, var_b, df_b = _mean_and_variance(b)
    method = RUNS if min(a.shape[0], b.shape[0]) >= 2 else MIXED
    diff = mean_a - mean_b
    variance = var_a + var_b
    if not variance > 0:
        return _degenerate(diff, method, variance)
    df = variance**2 / (var_a**2 / df_a + var_b**2 / df_b)
    se = math.sqrt(variance)
    half = _t_quantile(df) * se
    return Estimate(diff, diff - half, diff + half, se, float(special.stdtr(df, -diff / se)), method)


def _degenerate(diff: float, method: str, variance: float) -> Estimate:
    # No variation at all (e.g. both sides never name the animal): nothing to test against. A zero or
    # negative difference is no evidence for "a > b" (p = 1); a positive one without any noise
    # estimate has no p-value.
    if math.isnan(variance):
        return Estimate(diff, math.nan, math.nan, math.nan, math.nan, method)
    return Estimate(diff, diff, diff, 0.0, 1.0 if diff <= 0 else math.nan, method)


def sign_flip_pvalue(differences, seed: int = 0) -> float:
    """One-sided p of "mean difference > 0" under random sign flips of the per-question differences."""
    d = np.asarray(differences, dtype=float)
    d = d[d != 0]
    if d.size == 0:
        return 1.0
    observed = d.sum()
    tolerance = 1e-12 * max(1.0, float(np.abs(d).sum()))
    if d.size <= EXACT_SIGN_FLIP_MAX:
        signs = ((np.arange(2**d.size)[:, None] >> np.arange(d.size)) & 1) * 2 - 1
        return float(np.mean(signs @ d >= observed - tolerance))
    rng = np.random.default_rng(seed)
    signs = rng.choice((-1.0, 1.0), size=(MONTE_CARLO_FLIPS, d.size))
    extreme = int(np.sum(signs @ d >= observed - tolerance))
    return (1 + extreme) / (MONTE_CARLO_FLIPS + 1)


def paired_questions(a, b, seed: int = 0) -> Estimate:
    """a − b for one run each, paired over questions (see module doc)."""
    a, b = as_rates(a), as_rates(b)
    d = a[0] - b[0]
    diff = float(d.mean())
    p = sign_flip_pvalue(d, seed)
    if d.size < 2 or not d.std() > 0:
        return Estimate(diff, diff, diff, 0.0, p, QUESTIONS)
    se = float(d.std(ddof=1) / math.sqrt(d.size))
    half = _t_quantile(d.size - 1) * se
    return Estimate(diff, diff - half, diff + half, se, p, QUESTIONS)


def compare(a, b, seed: int = 0) -> Estimate:
    """a − b (rates of two conditions for one animal) with interval and one-sided p for a > b."""
    a, b = as_rates(a), as_rates(b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"the two sides were asked different numbers of questions ({a.shape[1]} vs {b.shape[1]}); "
            f"evaluate every cell with the same protocol.evaluation settings"
        )
    if a.shape[0] == 1 and b.shape[0] == 1:
        return paired_questions(a, b, seed)
    return welch(a, b)
