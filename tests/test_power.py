"""Statistical power of the evaluation: the numbers README.md states, the default config's evaluation size,
and the power formula checked against the report's own test on simulated runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from conftest import REPO
from sublim.config import load_presets, resolve
from sublim.power import (
    GRID,
    POWER_COLUMNS,
    REPORTED_RUN_SDS,
    SEED_RUN_0,
    answers_for_power,
    evaluation_power,
    half_width,
    max_run_sd,
    power_table,
    welch_power,
)
from sublim.stats import compare


def test_one_run_of_the_seeds_100_answers_is_about_nine_points_wide():
    assert half_width(0.3, 100) == pytest.approx(1.96 * math.sqrt(0.21 / 100), rel=1e-3)
    assert round(half_width(0.3, 100), 3) == 0.090
    seed = evaluation_power(load_presets()["seed"]["evaluation"], runs=3)
    assert seed["answers_per_epoch"] == 100 and seed["power"] < 0.8  # 3 seed-sized runs miss 10 pp


def test_runs_interval_is_the_reports_t_interval():
    # 3 runs: t with 2 df over run rates of variance run_sd² + p(1-p)/n
    assert half_width(0.3, 1000, runs=3, run_sd=0.03) == pytest.approx(4.303 * math.sqrt((0.0009 + 0.21 / 1000) / 3),
                                                                         rel=1e-3)


def test_detectable_difference_needs_answers_until_runs_disagree():
    assert answers_for_power(run_sd=0.0) == pytest.approx(165, abs=3)
    assert answers_for_power(run_sd=0.03) == pytest.approx(483, abs=10)
    assert answers_for_power(run_sd=0.04) is None  # training spread alone: more runs, not more answers
    assert max_run_sd(math.inf) == pytest.approx(0.037, abs=5e-4)
    assert max_run_sd(100) == 0.0
    assert max_run_sd(139) < max_run_sd(1000) < max_run_sd(5000) < max_run_sd(math.inf)


def test_default_config_detects_ten_points_with_three_runs():
    config = resolve(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    stated = evaluation_power(config["protocol"]["evaluation"], runs=len(config["runs"]), run_sd=0.03)
    assert stated["answers_per_epoch"] == 1000 and stated["power"] >= 0.8
    assert round(stated["half_width_epoch"], 3) == 0.028 and round(stated["max_run_sd"], 3) == 0.034


@pytest.mark.parametrize("answers, run_sd", [(150, 0.0), (300, 0.03)])
def test_power_formula_matches_the_reports_test_on_simulated_runs(answers, run_sd):
    rng = np.random.default_rng(answers)
    trials, found = 600, 0
    for i in range(trials):
        sides = []
        for rate in (0.4, 0.3):
            p = np.clip(rate + rng.normal(0, run_sd, size=3), 0, 1)
            sides.append(rng.binomial(answers // 50, p[:, None], size=(3, 50)) / (answers // 50))
        found += compare(*sides, seed=i).p < 0.05
    assert found / trials == pytest.approx(welch_power(answers, run_sd=run_sd), abs=0.06)


def test_power_table_states_the_configured_evaluation_and_the_seeds():
    config = resolve(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    table = power_table(config["protocol"]["evaluation"], len(config["runs"]))
    assert list(table.columns) == POWER_COLUMNS
    grid = table[table["evaluation"] == GRID].set_index("run_sd")
    assert list(grid.index) == list(REPORTED_RUN_SDS)
    assert (grid["answers_per_epoch"] == 1000).all() and (grid["runs"] == 3).all()
    assert grid.loc[0.0, "half_width_epoch"] == pytest.approx(half_width(0.3, 1000))
    assert grid.loc[0.03, "half_width_cell"] == pytest.approx(half_width(0.3, 1000, runs=3, run_sd=0.03))
    seed = table[table["evaluation"] == SEED_RUN_0].iloc[0]
    assert (seed["answers_per_epoch"], seed["runs"]) == (100, 1)
    assert round(seed["half_width_epoch"], 3) == 0.090 and math.isnan(seed["half_width_cell"])
    # one run: only the evaluation's own width, no between-run row to state
    one_run = power_table({"n_questions": 6, "samples_per_question": 4}, runs=1)
    assert list(one_run["evaluation"]) == [GRID, SEED_RUN_0] and one_run["power"].isna().all()
