"""The statistics of transmission: planted effects are covered and found, null effects are not, and the
tests hold their nominal error rate."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from sublim.config import load_presets
from sublim.backends import chat_one_by_one
from sublim.evaluate import evaluate_students
from sublim.generate import generate_rows
from sublim.stats import (
    MEAN_OF_ANIMALS,
    MIXED,
    PAIRED_RUNS,
    QUESTIONS,
    RUNS,
    add_qvalues,
    bh_qvalues,
    compare,
    log_slope,
    paired_runs,
    rate_interval,
    scaling_trend,
    sign_flip_pvalue,
    trend_band,
)


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


# --- SciPy where SciPy does the job --------------------------------------------------------------

def test_one_run_sides_equal_scipys_tests():
    rng = np.random.default_rng(6)
    a, b = simulate(rng, 3, 0.3, 0.05), simulate(rng, 1, 0.2)
    mixed = compare(a, b)
    runs, single = a.mean(1), b[0]
    reference = st.ttest_ind_from_stats(runs.mean(), runs.std(ddof=1), 3, single.mean(), single.std(ddof=1),
                                        single.size, equal_var=False, alternative="greater")
    assert mixed.method == MIXED and mixed.p == pytest.approx(reference.pvalue)
    paired = compare(a[:1], b)
    interval = st.ttest_rel(a[0], b[0]).confidence_interval(0.95)
    assert paired.method == QUESTIONS and (paired.lo, paired.hi) == pytest.approx((interval.low, interval.high))
    one = rate_interval(b)
    interval = st.ttest_1samp(b[0], 0).confidence_interval(0.95)
    assert (one.lo, one.hi) == pytest.approx((max(0, interval.low), interval.high))


def test_runs_with_equal_counts_have_no_variation_not_rounding_noise():
    # three runs that named the animal equally often, in different questions: their means agree only up
    # to rounding, which must not pass for a standard error of 1e-17 (and a p-value of 1e-17)
    a = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1], [0.2, 0.3, 0.1]])
    b = np.zeros((3, 3))
    assert rate_interval(a).se == 0
    estimate = compare(a, b)
    assert estimate.se == 0 and math.isnan(estimate.p)


# --- many comparisons ---------------------------------------------------------------------------

def test_bh_qvalues_are_scipys_and_skip_missing_p_values():
    p = np.array([0.01, np.nan, 0.04, 0.03, 0.5])
    q = bh_qvalues(p)
    assert np.isnan(q[1])
    assert q[[0, 2, 3, 4]] == pytest.approx(st.false_discovery_control([0.01, 0.04, 0.03, 0.5]))
    assert q[[0, 2, 3, 4]] == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])  # p·m/rank, then monotone
    assert np.isnan(bh_qvalues([np.nan, np.nan])).all()


def test_qvalues_are_computed_within_each_epoch():
    table = pd.DataFrame({"epoch": [1, 1, 2, 2], "x_p": [0.01, 0.02, 0.01, np.nan]})
    out = add_qvalues(table, ["x_p"])
    assert out["x_q"].tolist()[:3] == pytest.approx([0.02, 0.02, 0.01])
    assert np.isnan(out["x_q"].iloc[3])
    with pytest.raises(ValueError, match="expected a p-value column"):
        add_qvalues(table, ["epoch"])


def test_bh_keeps_the_false_discovery_rate_among_many_null_cells():
    # 105 cells per epoch, 10 with a real effect: among the cells called at q < 0.05, false ones average
    # at most 5 % (BH's guarantee for independent tests); raw p < 0.05 calls ~5 null cells per epoch
    rng = np.random.default_rng(7)
    false_shares, raw_false = [], []
    for _ in range(200):
        z = rng.normal(size=105)
        z[:10] += 3.5
        p = st.norm.sf(z)
        called = bh_qvalues(p) < 0.05
        false_shares.append(called[10:].sum() / max(called.sum(), 1))
        raw_false.append((p[10:] < 0.05).sum())
    assert np.mean(false_shares) <= 0.05
    assert np.mean(raw_false) == pytest.approx(95 * 0.05, abs=1)


# --- the scaling trend --------------------------------------------------------------------------

PARAMS_B = {"0.5b": 0.49, "1.5b": 1.54, "3b": 3.09, "7b": 7.62, "14b": 14.7, "32b": 32.5, "72b": 72.7}


def grid_rates(rng, slope: float, animals=("owl", "cat", "eagle"), runs: int = 3, size_sd: float = 0.02,
               run_sd: float = 0.03, samples: int = 100) -> pd.DataFrame:
    """A preferences table: per size the animal students' rate for their animal rises by `slope` per tenfold
    parameters above the neutral student's, plus a size deviation off the line, run effects and sampling."""
    rows = []
    for size, params in PARAMS_B.items():
        x = math.log10(params)
        for animal in animals:
            baseline = rng.uniform(0.05, 0.3)
            deviation = rng.normal(0, size_sd)
            for run in range(1, runs + 1):
                for condition, rate in ((animal, baseline + 0.1 + slope * x + deviation), ("neutral", baseline)):
                    p = float(np.clip(rate + rng.normal(0, run_sd), 0, 1))
                    rows.append((size, condition, run, 10, animal, rng.binomial(samples, p) / samples))
    return pd.DataFrame(rows, columns=["size", "condition", "run", "epoch", "animal", "rate"])


def test_planted_slope_is_covered_and_significant():
    rates = grid_rates(np.random.default_rng(8), slope=0.08)
    trend = scaling_trend(rates, list(PARAMS_B), ["owl", "cat", "eagle"], PARAMS_B).set_index("animal")
    assert list(trend.columns[:4]) == ["epoch", "against", "n_sizes", "sizes"]
    mean = trend.loc[MEAN_OF_ANIMALS]
    assert (mean["n_sizes"], mean["df"], mean["runs_animal"], mean["runs_other"]) == (7, 5, 3, 3)
    assert mean["slope_lo"] <= 0.08 <= mean["slope_hi"] and mean["slope_p"] < 0.01
    assert (trend["slope"] > 0).all()  # each animal alone: the same direction, less power than their mean


def test_no_slope_holds_its_level_and_coverage():
    rng = np.random.default_rng(9)
    trials, small, covered = 300, 0, 0
    for _ in range(trials):
        trend = scaling_trend(grid_rates(rng, slope=0.0, animals=("owl",)), list(PARAMS_B), ["owl"], PARAMS_B)
        row = trend.set_index("animal").loc[MEAN_OF_ANIMALS]
        small += row["slope_p"] < 0.05
        covered += row["slope_lo"] <= 0 <= row["slope_hi"]
    assert small / trials <= 0.05 + 0.038  # 3 SE of a 5 % rate over 300 trials
    assert covered / trials >= 0.95 - 0.038


def test_trend_says_what_is_missing():
    rates = grid_rates(np.random.default_rng(10), slope=0.05, runs=1)
    two_sizes = rates[rates["size"].isin(["0.5b", "7b"])]
    row = scaling_trend(two_sizes, list(PARAMS_B), ["owl"], PARAMS_B).set_index("animal").loc["owl"]
    assert row["n_sizes"] == 2 and math.isnan(row["slope"]) and "a slope needs 3" in row["note"]
    no_cat_at_72b = rates[~((rates["size"] == "72b") & (rates["condition"] == "cat"))]
    trend = scaling_trend(no_cat_at_72b, list(PARAMS_B), ["owl", "cat"], PARAMS_B).set_index("animal")
    assert trend.loc[MEAN_OF_ANIMALS, "n_sizes"] == 6 and "72b" in trend.loc[MEAN_OF_ANIMALS, "note"]
    assert "one run per size" in trend.loc["owl", "note"]
    with pytest.raises(ValueError, match="against"):
        scaling_trend(rates, list(PARAMS_B), ["owl"], PARAMS_B, against="control")


def test_trend_against_the_base_model_uses_its_epoch_zero():
    rates = grid_rates(np.random.default_rng(11), slope=0.06, animals=("owl",))
    base = rates[rates["condition"] == "neutral"].assign(condition="base", run=0, epoch=0)
    base = base.groupby(["size", "condition", "run", "epoch", "animal"], as_index=False)["rate"].mean()
    trend = scaling_trend(pd.concat([rates, base]), list(PARAMS_B), ["owl"], PARAMS_B, against="base")
    row = trend.set_index("animal").loc["owl"]
    assert list(trend["epoch"]) == [10, 10] and row["runs_other"] == 1
    assert row["slope_lo"] <= 0.06 <= row["slope_hi"]


def test_log_slope_is_linregress_with_a_t_interval():
    x, y = np.log10(list(PARAMS_B.values())), np.array([0.0, 0.05, 0.02, 0.1, 0.3, 0.2, 0.25])
    trend, fit = log_slope(x, y), st.linregress(x, y)
    half = st.t.ppf(0.975, 5) * fit.stderr
    assert (trend.slope, trend.p, trend.df) == pytest.approx((fit.slope, fit.pvalue, 5))
    assert (trend.lo, trend.hi) == pytest.approx((fit.slope - half, fit.slope + half))
    flat = log_slope(x, np.full(7, 0.1))
    assert (flat.slope, flat.se, flat.p) == pytest.approx((0.0, 0.0, 1.0))


def test_trend_band_is_the_ols_confidence_band_of_the_fitted_line():
    x, y = np.log10(list(PARAMS_B.values())), np.array([0.0, 0.05, 0.02, 0.1, 0.3, 0.2, 0.25])
    trend = log_slope(x, y)
    at = np.array([-0.5, 0.7, 2.0])
    line, lo, hi = trend_band(x, trend, at)
    # the textbook band from the design matrix: se(ŷ) = sqrt(a' (X'X)^-1 a · s²)
    design = np.column_stack([np.ones_like(x), x])
    residual = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    s2 = residual @ residual / (len(x) - 2)
    points = np.column_stack([np.ones_like(at), at])
    se = np.sqrt(np.einsum("ij,jk,ik->i", points, np.linalg.inv(design.T @ design), points) * s2)
    assert line == pytest.approx(trend.intercept + trend.slope * at)
    assert hi - line == pytest.approx(st.t.ppf(0.975, 5) * se) and line - lo == pytest.approx(hi - line)
    assert np.isnan(trend_band(x[:2], log_slope(x[:2], y[:2]), at)[1]).all()  # no slope, no band


# --- shared random numbers ------------------------------------------------------------------------
# Sampling seeds depend on run, epoch and request, not on the condition, and a run's seed sets every
# condition's LoRA init and data order: within a run the animal and neutral students share their random
# numbers (README, "Statistics"). The comparisons must stay valid under that coupling.

class SeedRecorder:
    """A backend that answers with one fixed word and records the seed of every call."""

    def __init__(self):
        self.seeds = []

    def chat(self, conversations, sampling, seed, **kwargs):
        self.seeds.append(seed)
        return ["Owl."] * len(conversations)

    def chat_many(self, calls, sampling, desc=""):
        return chat_one_by_one(self, calls, sampling, desc)


def test_both_conditions_of_a_run_sample_with_the_same_seeds():
    preset = load_presets()["seed"]
    students = SeedRecorder()
    for adapter in ("results/students/7b/owl/run-1/epoch-3", "results/students/7b/neutral/run-1/epoch-3",
                    "results/students/7b/owl/run-2/epoch-3"):
        evaluate_students(students, {3: adapter}, preset["evaluation"], seed=int(adapter.split("run-")[1][0]))
    assert students.seeds[0] == students.seeds[1] != students.seeds[2]
    teachers = SeedRecorder()
    for condition in ("owl", "neutral"):
        generate_rows(teachers, condition, {**preset["generation"], "n_prompts": 2}, preset["filter"],
                      prompt_seed=1, sample_seed=1)
    assert teachers.seeds[0] == teachers.seeds[1]


def simulate_pair(rng, runs: int, rate_a: float, rate_b: float, run_sd: float = 0.0, shared_run: float = 0.5,
                  shared_draws: bool = True, questions: int = 20, samples: int = 20):
    """Two conditions' per-question rates drawn as the workflow draws them: in each run both students
    answer each (question, sample) with the same random number, and `shared_run` of their run effects'
    variance is common (same LoRA init, data order, teacher prompts)."""
    a_rows, b_rows = [], []
    for _ in range(runs):
        common, own_a, own_b = rng.normal(0, run_sd, 3)
        p_a = np.clip(rate_a + math.sqrt(shared_run) * common + math.sqrt(1 - shared_run) * own_a, 0, 1)
        p_b = np.clip(rate_b + math.sqrt(shared_run) * common + math.sqrt(1 - shared_run) * own_b, 0, 1)
        draws = rng.random((questions, samples))
        a_rows.append((draws < p_a).mean(1))
        b_rows.append(((draws if shared_draws else rng.random((questions, samples))) < p_b).mean(1))
    return np.array(a_rows), np.array(b_rows)


@pytest.mark.parametrize("runs", [3, 1])
def test_comparisons_hold_their_level_with_shared_random_numbers(runs):
    # 3 runs: Welch treats the two conditions' runs as independent; the shared randomness correlates them
    # positively, which can only make it conservative. 1 run: paired by question, the two students'
    # answers are still exchangeable under "no difference".
    rng = np.random.default_rng(12)
    small, covered, trials = 0, 0, 400
    for i in range(trials):
        a, b = simulate_pair(rng, runs, 0.2, 0.2, run_sd=0.03 if runs > 1 else 0.0)
        estimate = compare(a, b, seed=i)
        small += estimate.p < 0.05
        covered += estimate.lo <= 0 <= estimate.hi
    assert small / trials <= 0.05 + 0.033
    assert covered / trials >= 0.95 - 0.033


def test_shared_draws_tighten_the_question_paired_comparison():
    # the point of sharing: two students that differ a little give per-question differences that come
    # from the students, not from the dice
    rng = np.random.default_rng(13)
    widths = {}
    for shared in (True, False):
        intervals = [compare(*simulate_pair(rng, 1, 0.25, 0.2, shared_draws=shared), seed=i) for i in range(200)]
        widths[shared] = np.mean([e.hi - e.lo for e in intervals])
    assert widths[True] < 0.6 * widths[False]


def test_paired_runs_is_scipys_paired_t_on_run_means_and_holds_its_level():
    rng = np.random.default_rng(14)
    a, b = simulate_pair(rng, 3, 0.3, 0.2, run_sd=0.03)
    estimate = paired_runs(a, b)
    interval = st.ttest_rel(a.mean(1), b.mean(1)).confidence_interval(0.95)
    assert estimate.method == PAIRED_RUNS and (estimate.lo, estimate.hi) == pytest.approx((interval.low, interval.high))
    assert estimate.p == pytest.approx(st.ttest_rel(a.mean(1), b.mean(1), alternative="greater").pvalue)
    small, trials = 0, 400
    for _ in range(trials):
        small += paired_runs(*simulate_pair(rng, 3, 0.2, 0.2, run_sd=0.03)).p < 0.05
    assert small / trials <= 0.05 + 0.033
    with pytest.raises(ValueError, match="same runs"):
        paired_runs(a, b[:2])
