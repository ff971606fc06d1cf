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
Where SciPy has the test, SciPy computes it (`ttest_ind`, `ttest_rel`, `ttest_1samp` and their
`confidence_interval`); the "runs+questions" Welch combination is written out because `ttest_ind` cannot
take one side's variance from its questions.

Within a run the animal and neutral students share their random numbers (sampling seeds depend on run,
epoch and request, not on the condition; the run's seed sets LoRA init and data order). `compare` stays
valid under that coupling (Welch treats the runs as independent, which the positive coupling only makes
conservative); `paired_runs` is the test that uses it. README.md, "Statistics", says why.

Beyond single comparisons: `bh_qvalues`/`add_qvalues` (Benjamini–Hochberg over the cells of an epoch)
and `scaling_trend` (the slope of transmission against log10 parameters, `log_slope`).
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special
from scipy import stats as st

from sublim.config import BASE
from sublim.protocol import NEUTRAL_CONDITION as NEUTRAL

LEVEL = 0.95
EXACT_SIGN_FLIP_MAX = 16
MONTE_CARLO_FLIPS = 20_000

RUNS = "runs"
MIXED = "runs+questions"
QUESTIONS = "questions"
PAIRED_RUNS = "paired runs"


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


def _unit_values(x: np.ndarray) -> np.ndarray:
    """What a side's interval is computed over: its run means, or with one run its question rates."""
    return x.mean(axis=1) if x.shape[0] >= 2 else x[0]


def _mean_and_variance(x: np.ndarray) -> tuple[float, float, float]:
    """The side's mean, the variance of that mean, and its degrees of freedom (see module doc)."""
    values = _unit_values(x)
    if values.size < 2:
        return float(values.mean()), math.nan, 0.0
    # Runs with equal answer counts have equal means up to rounding: that spread is no variation.
    rounding = 1e-12 * max(1.0, float(np.abs(values).max()))
    variance = float(values.var(ddof=1) / values.size) if float(np.ptp(values)) > rounding else 0.0
    return float(values.mean()), variance, values.size - 1.0


@contextmanager
def _constant_sides_allowed():
    """SciPy warns of precision loss whenever a sample's values are all equal (e.g. three runs that named
    the animal equally often). Such a side has no variance, which is exact, not unreliable."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Precision loss occurred", category=RuntimeWarning)
        yield


def rate_interval(x) -> Estimate:
    """One condition's rate: mean over runs and questions, SciPy's one-sample t interval clipped to [0, 1]."""
    x = as_rates(x)
    mean, variance, _ = _mean_and_variance(x)
    method = RUNS if x.shape[0] >= 2 else QUESTIONS
    if not variance > 0:
        return Estimate(mean, mean, mean, 0.0 if variance == 0 else math.nan, math.nan, method)
    with _constant_sides_allowed():
        interval = st.ttest_1samp(_unit_values(x), 0.0).confidence_interval(LEVEL)
    return Estimate(mean, max(0.0, float(interval.low)), min(1.0, float(interval.high)), math.sqrt(variance),
                    math.nan, method)


def welch(a, b) -> Estimate:
    """a − b from two sides' means and mean variances, Welch–Satterthwaite degrees of freedom.

    Both sides with runs: SciPy's Welch test on the run means (`ttest_ind(equal_var=False)`). One side a
    single run: that side's mean variance comes from its questions, which `ttest_ind` cannot take, so the
    same Welch construction is written out here (its p equals `ttest_ind_from_stats`, tests/test_stats.py)."""
    a, b = as_rates(a), as_rates(b)
    mean_a, var_a, df_a = _mean_and_variance(a)
    mean_b, var_b, df_b = _mean_and_variance(b)
    method = RUNS if min(a.shape[0], b.shape[0]) >= 2 else MIXED
    diff = mean_a - mean_b
    variance = var_a + var_b
    if not variance > 0:
        return _degenerate(diff, method, variance)
    se = math.sqrt(variance)
    if method == RUNS:
        runs_a, runs_b = a.mean(axis=1), b.mean(axis=1)
        with _constant_sides_allowed():
            interval = st.ttest_ind(runs_a, runs_b, equal_var=False).confidence_interval(LEVEL)
            p = st.ttest_ind(runs_a, runs_b, equal_var=False, alternative="greater").pvalue
        return Estimate(diff, float(interval.low), float(interval.high), se, float(p), method)
    df = variance**2 / (var_a**2 / df_a + var_b**2 / df_b)
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
    """a − b for one run each, paired over questions (see module doc): SciPy's paired t interval
    (`ttest_rel`), the sign-flip p."""
    a, b = as_rates(a), as_rates(b)
    d = a[0] - b[0]
    diff = float(d.mean())
    p = sign_flip_pvalue(d, seed)
    if d.size < 2 or not d.std() > 0:
        return Estimate(diff, diff, diff, 0.0, p, QUESTIONS)
    se = float(d.std(ddof=1) / math.sqrt(d.size))
    with _constant_sides_allowed():
        interval = st.ttest_rel(a[0], b[0]).confidence_interval(LEVEL)
    return Estimate(diff, float(interval.low), float(interval.high), se, p, QUESTIONS)


def paired_runs(a, b) -> Estimate:
    """a − b paired by run (row r of both sides is run r): SciPy's paired t-test of the run means, one-sided
    p for a > b. Valid whatever the two students of a run share; it gains over Welch when the shared
    training randomness makes a run's two students move together, and loses degrees of freedom
    (runs − 1 instead of Welch's ~2·(runs − 1)) when they do not. The report's choice: README, "Statistics"."""
    a, b = as_rates(a), as_rates(b)
    if a.shape != b.shape:
        raise ValueError(f"paired runs need the same runs and questions on both sides, got {a.shape} and {b.shape}")
    if a.shape[0] < 2:
        raise ValueError("paired runs need at least 2 runs; with one, compare() pairs by question")
    d = a.mean(axis=1) - b.mean(axis=1)
    diff = float(d.mean())
    _, variance, _ = _mean_and_variance(d[:, None])
    if not variance > 0:
        return _degenerate(diff, PAIRED_RUNS, variance)
    with _constant_sides_allowed():
        interval = st.ttest_rel(a.mean(axis=1), b.mean(axis=1)).confidence_interval(LEVEL)
        p = st.ttest_rel(a.mean(axis=1), b.mean(axis=1), alternative="greater").pvalue
    return Estimate(diff, float(interval.low), float(interval.high), math.sqrt(variance), float(p), PAIRED_RUNS)


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


# --- many comparisons: Benjamini–Hochberg ---------------------------------------------------------

def bh_qvalues(p_values) -> np.ndarray:
    """Benjamini–Hochberg q-values (SciPy's `false_discovery_control`) of the finite p-values; NaN stays
    NaN and is not counted as a test."""
    p = np.asarray(p_values, dtype=float)
    q = np.full(p.shape, math.nan)
    tested = ~np.isnan(p)
    if tested.any():
        q[tested] = st.false_discovery_control(p[tested], method="bh")
    return q


def add_qvalues(table: pd.DataFrame, p_columns: list[str], family: list[str] | tuple[str, ...] = ("epoch",)
                ) -> pd.DataFrame:
    """`table` with an `…_q` column beside each `…_p` column: BH q-values within each `family` group
    (by default all cells of one epoch: every size × animal compared at that epoch)."""
    out = table.copy()
    for column in p_columns:
        if not column.endswith("_p"):
            raise ValueError(f"{column}: expected a p-value column named …_p")
        q_column = column[:-2] + "_q"
        if family:
            out[q_column] = out.groupby(list(family), dropna=False)[column].transform(
                lambda p: bh_qvalues(p.to_numpy(dtype=float)))
        else:
            out[q_column] = bh_qvalues(out[column].to_numpy(dtype=float))
    return out


# --- the scaling claim: transmission against log10 parameters ---------------------------------------

@dataclass(frozen=True)
class Trend:
    """The slope of a quantity against log10 parameters (per tenfold parameters), its 95 % interval,
    standard error and two-sided p, the intercept and the residual degrees of freedom."""

    slope: float
    lo: float
    hi: float
    se: float
    p: float
    intercept: float
    df: int


def log_slope(log_params, values) -> Trend:
    """Ordinary least squares of one value per size on log10 parameters (SciPy's `linregress`), t
    interval and two-sided p with n_sizes − 2 degrees of freedom. Each value is a size's mean over its
    runs, so the residual scatter holds the run-to-run variation and any departure from a line: the
    slope's uncertainty rests on independent training runs and on the sizes, not on answers."""
    x, y = np.asarray(log_params, dtype=float), np.asarray(values, dtype=float)
    if x.size != y.size:
        raise ValueError(f"{x.size} sizes but {y.size} values")
    if x.size < 3 or np.unique(x).size < 2:
        return Trend(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, max(x.size - 2, 0))
    fit = st.linregress(x, y)
    df = x.size - 2
    if not fit.stderr > 0:  # the values lie exactly on a line: no scatter to test against
        p = 1.0 if fit.slope == 0 else math.nan
        return Trend(float(fit.slope), float(fit.slope), float(fit.slope), 0.0, p, float(fit.intercept), df)
    half = _t_quantile(df) * fit.stderr
    return Trend(float(fit.slope), float(fit.slope - half), float(fit.slope + half), float(fit.stderr),
                 float(fit.pvalue), float(fit.intercept), df)


def trend_band(log_params_fit, trend: Trend, x) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fitted line at log10 parameters `x` and its 95 % confidence band (for the mean, not a new
    size), from the fit's own sizes: the residual variance is se² · Sxx, so the fitted value's standard
    error is se · sqrt(Sxx / n + (x − x̄)²)."""
    fit_x, x = np.asarray(log_params_fit, dtype=float), np.asarray(x, dtype=float)
    line = trend.intercept + trend.slope * x
    if not trend.se >= 0 or fit_x.size < 3:
        return line, np.full(x.shape, math.nan), np.full(x.shape, math.nan)
    centre = fit_x.mean()
    half = _t_quantile(trend.df) * trend.se * np.sqrt(((fit_x - centre) ** 2).sum() / fit_x.size + (x - centre) ** 2)
    return line, line - half, line + half


MEAN_OF_ANIMALS = "mean"
TREND_COLUMNS = ["epoch", "animal", "against", "n_sizes", "sizes", "runs_animal", "runs_other", "slope",
                 "slope_lo", "slope_hi", "slope_se", "slope_p", "intercept", "df", "method", "note"]
TREND_METHOD = "OLS of size means on log10 params, t(n_sizes - 2)"


def _size_differences(run_means: dict, sizes: list[str], animal: str, epoch: int, against: str
                      ) -> dict[str, tuple[float, int, int]]:
    """Per size: the animal student's mean run rate for its animal minus the comparison's, and the run counts."""
    found = {}
    for size in sizes:
        mine = run_means.get((size, animal, epoch, animal))
        other = run_means.get((size, against, 0 if against == BASE else epoch, animal))
        if mine and other:
            found[size] = (mine[0] - other[0], mine[1], other[1])
    return found


def scaling_trend(rates: pd.DataFrame, sizes: list[str], animals: list[str], params_b: dict[str, float],
                  against: str = NEUTRAL) -> pd.DataFrame:
    """The scaling claim as a test: per epoch, for each animal and for the mean over the animals, the slope
    of transmission (animal student minus the `against` student — neutral, or the untuned base — on that
    animal) against log10 parameters, from `rates`: one row per (size, condition, run, epoch, animal)
    with its `rate` (the report's preferences.csv). The mean's sizes are those where every animal has
    both sides. See `log_slope` for the model."""
    if against not in (NEUTRAL, BASE):
        raise ValueError(f"against={against!r}: compare with {NEUTRAL!r} or {BASE!r}")
    students = rates[rates["condition"] != BASE]
    grouped = rates.groupby(["size", "condition", "epoch", "animal"])["rate"].agg(["mean", "count"])
    run_means = {key: (float(m), int(n)) for key, m, n in zip(grouped.index, grouped["mean"], grouped["count"])}
    rows = []
    for epoch in sorted(int(e) for e in students["epoch"].unique()):
        per_animal = {a: _size_differences(run_means, sizes, a, epoch, against) for a in animals}
        for animal, found in per_animal.items():
            rows.append(_trend_row(epoch, animal, against, found, params_b))
        complete = [s for s in sizes if all(s in found for found in per_animal.values())]
        mean = {s: (float(np.mean([per_animal[a][s][0] for a in animals])),
                    min(per_animal[a][s][1] for a in animals), min(per_animal[a][s][2] for a in animals))
                for s in complete} if animals else {}
        row = _trend_row(epoch, MEAN_OF_ANIMALS, against, mean, params_b)
        missing = [s for s in sizes if s not in complete and any(s in found for found in per_animal.values())]
        if missing:
            row["note"] = "; ".join(filter(None, [row["note"], f"left out (not every animal): {', '.join(missing)}"]))
        rows.append(row)
    return pd.DataFrame.from_records(rows, columns=TREND_COLUMNS)


def _trend_row(epoch: int, animal: str, against: str, found: dict[str, tuple[float, int, int]],
               params_b: dict[str, float]) -> dict:
    sizes = list(found)
    trend = log_slope([math.log10(params_b[s]) for s in sizes], [found[s][0] for s in sizes])
    notes = []
    if len(sizes) < 3:
        notes.append(f"{len(sizes)} sizes with both students: a slope needs 3")
    runs_animal = min((found[s][1] for s in sizes), default=0)
    runs_other = min((found[s][2] for s in sizes), default=0)
    if sizes and max(runs_animal, runs_other) < 2:
        notes.append("one run per size: the scatter between sizes is the only noise estimate")
    return {"epoch": epoch, "animal": animal, "against": against, "n_sizes": len(sizes), "sizes": ";".join(sizes),
            "runs_animal": runs_animal, "runs_other": runs_other, "slope": trend.slope, "slope_lo": trend.lo,
            "slope_hi": trend.hi, "slope_se": trend.se, "slope_p": trend.p, "intercept": trend.intercept,
            "df": trend.df, "method": TREND_METHOD, "note": "; ".join(notes)}
