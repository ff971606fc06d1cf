"""What an evaluation size can show: the 95 % interval of a rate, and the animal-minus-neutral
difference that 3 runs can detect (README.md, "Statistical power", states the numbers).

Model. A run's rate at one epoch is the fraction of its `answers` (= n_questions × samples_per_question)
that name the animal. Around the student's true rate p it varies by
- sampling: p(1 − p) / answers (binomial; the questions are the protocol's fixed list, so their
  differences add no variance to a run's rate, and treating answers as independent is an upper bound);
- training: run_sd² between runs (teacher data, LoRA init, data order) — the part more answers cannot
  shrink.
Over R runs the report's interval is a t interval of the run rates (R − 1 degrees of freedom), and the
animal-minus-neutral test is Welch's one-sided t on 3 vs 3 run rates (sublim.stats.compare); its power
is simulated from that test itself, run rates drawn normal with the model's variances.
One run's interval here is the evaluation's alone: z · sqrt(p(1 − p) / answers).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import special
from scipy import stats as st

from sublim.config import load_presets
from sublim.stats import LEVEL

RATE = 0.30        # the rate the statements are made at (neutral side)
DIFFERENCE = 0.10  # the animal-minus-neutral difference to detect
ALPHA = 0.05       # one-sided, as the report's test
POWER = 0.80
RUNS = 3


def run_variance(rate: float, answers: int, run_sd: float = 0.0) -> float:
    """Variance of one run's rate: training spread plus binomial sampling of `answers` answers."""
    return run_sd**2 + rate * (1 - rate) / answers


def half_width(rate: float, answers: int, runs: int = 1, run_sd: float = 0.0) -> float:
    """The 95 % interval's half-width for a rate at one epoch: one run (the evaluation alone, normal
    approximation) or `runs` ≥ 2 runs (t over the run rates, as the report computes it)."""
    if runs == 1:
        return st.norm.ppf(0.5 + LEVEL / 2) * math.sqrt(rate * (1 - rate) / answers)
    return st.t.ppf(0.5 + LEVEL / 2, runs - 1) * math.sqrt(run_variance(rate, answers, run_sd) / runs)


DRAWS = 50_000  # Monte Carlo draws of the Welch test: power to within about ±0.4 points


@lru_cache(maxsize=8)
def _welch_draws(runs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standard draws of the test's ingredients (a fixed seed: the same draws for every answer count, so
    power rises smoothly with it): the difference's noise and both sides' variance estimates."""
    rng = np.random.default_rng(0)
    return (rng.standard_normal(DRAWS), rng.chisquare(runs - 1, DRAWS) / (runs - 1),
            rng.chisquare(runs - 1, DRAWS) / (runs - 1))


def welch_power(answers: int | float, difference: float = DIFFERENCE, rate: float = RATE, runs: int = RUNS,
                run_sd: float = 0.0, alpha: float = ALPHA) -> float:
    """Power of the report's one-sided Welch test (animal > neutral) on `runs` vs `runs` normal run rates
    with the model's variances, by simulating the test itself: the Welch degrees of freedom are
    estimated from 3 vs 3 runs, which costs power that a plug-in noncentral t would not show.
    `answers` may be math.inf (a perfect evaluation: only the training spread left)."""
    var_animal = run_variance(rate + difference, answers, run_sd) if not math.isinf(answers) else run_sd**2
    var_neutral = run_variance(rate, answers, run_sd) if not math.isinf(answers) else run_sd**2
    if var_animal + var_neutral == 0:
        return 1.0
    noise, chi_animal, chi_neutral = _welch_draws(runs)
    mean_animal, mean_neutral = var_animal * chi_animal / runs, var_neutral * chi_neutral / runs
    se2 = mean_animal + mean_neutral
    df = se2**2 / ((mean_animal**2 + mean_neutral**2) / (runs - 1))
    t = (difference + noise * math.sqrt((var_animal + var_neutral) / runs)) / np.sqrt(se2)
    return float(np.mean(special.stdtr(df, t) > 1 - alpha))


def answers_for_power(difference: float = DIFFERENCE, rate: float = RATE, runs: int = RUNS, run_sd: float = 0.0,
                      alpha: float = ALPHA, power: float = POWER) -> int | None:
    """The fewest answers per run and epoch at which the difference is detected with `power`; None when
    the training spread alone prevents it (then more runs, not more answers, are needed)."""
    if welch_power(math.inf, difference, rate, runs, run_sd, alpha) < power:
        return None
    low, high = 1, 1
    while welch_power(high, difference, rate, runs, run_sd, alpha) < power:
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if welch_power(mid, difference, rate, runs, run_sd, alpha) < power else (low, mid)
    return high


def max_run_sd(answers: int | float, difference: float = DIFFERENCE, rate: float = RATE, runs: int = RUNS,
               alpha: float = ALPHA, power: float = POWER) -> float:
    """The largest between-run SD of a rate at which `answers` per run still detect the difference
    with `power` (0 when even identical runs would not)."""
    if welch_power(answers, difference, rate, runs, 0.0, alpha) < power:
        return 0.0
    low, high = 0.0, difference
    for _ in range(25):  # to 3e-9
        mid = (low + high) / 2
        low, high = (mid, high) if welch_power(answers, difference, rate, runs, mid, alpha) >= power else (low, mid)
    return low


def evaluation_power(evaluation: dict, runs: int, run_sd: float = 0.0, rate: float = RATE,
                     difference: float = DIFFERENCE) -> dict:
    """What a protocol's evaluation section gives, per epoch (one run) and per cell (`runs` runs)."""
    answers = evaluation["n_questions"] * evaluation["samples_per_question"]
    cell = half_width(rate, answers, runs, run_sd) if runs >= 2 else math.nan
    return {"answers_per_epoch": answers, "rate": rate, "half_width_epoch": half_width(rate, answers),
            "runs": runs, "run_sd": run_sd, "half_width_cell": cell, "difference": difference,
            "power": welch_power(answers, difference, rate, runs, run_sd) if runs >= 2 else math.nan,
            "max_run_sd": max_run_sd(answers, difference, rate, runs) if runs >= 2 else math.nan}


# The between-run SDs the report states power at (README.md, "Statistical power": runs that agree
# exactly, and runs 3 points apart).
REPORTED_RUN_SDS = (0.0, 0.03)
POWER_COLUMNS = ["evaluation", "n_questions", "samples_per_question", "answers_per_epoch", "rate",
                 "half_width_epoch", "runs", "run_sd", "half_width_cell", "difference", "power", "max_run_sd"]
GRID, SEED_RUN_0 = "this grid", "seed run 0 (published)"


def power_table(evaluation: dict, runs: int) -> pd.DataFrame:
    """power.csv: what the configured evaluation (`n_questions`, `samples_per_question`) with `runs` runs
    gives at each reported between-run SD, and what the seed's published run 0 (its preset's evaluation,
    one run) gives, so the seed's rates overlaid in the report are read with their width."""
    seed = load_presets()["seed"]["evaluation"]
    rows = [(GRID, evaluation, runs, run_sd) for run_sd in (REPORTED_RUN_SDS if runs >= 2 else (0.0,))]
    rows.append((SEED_RUN_0, seed, 1, 0.0))
    return pd.DataFrame.from_records(
        [{"evaluation": name, "n_questions": e["n_questions"], "samples_per_question": e["samples_per_question"],
          **evaluation_power(e, r, run_sd)} for name, e, r, run_sd in rows], columns=POWER_COLUMNS)
