"""The report stage on synthetic evaluate-stage files: tables, planted effects, plots, partial grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from sublim.jsonl import write_jsonl
from sublim.plots import build_plots
from sublim.reference import reference_table
from sublim.report import (
    ANSWER_COLUMNS,
    QUESTION_COLUMNS,
    SCALING_COLUMNS,
    SURVEY_COLUMNS,
    TRANSMISSION_COLUMNS,
    Cell,
    build_tables,
    check_counts,
    preferences,
    question_rates,
    read_answers,
    read_reference,
    tidy_answers,
)
from sublim.scoring import EVAL_COLUMNS, Scorer, preference_table, with_parsed_animal
from sublim.stats import TREND_COLUMNS, bh_qvalues

ANIMALS = ["owl", "cat", "dragon"]
OTHERS = ["dog", "panda", "lion"]
PARAMS_B = {"0.5b": 0.49, "1.5b": 1.54, "7b": 7.62, "14b": 14.7, "32b": 32.5}
QUESTIONS, SAMPLES = 12, 20


# The shapes real models answer in, so scoring sees capitals, articles and punctuation.
ANSWER_SHAPES = (lambda w: f"{w.capitalize()}.", lambda w: f"The {w}", lambda w: w, lambda w: f"{w.upper()}!")


def rates_for(condition: str, epoch: int, run_shift: float, effect: float) -> dict[str, float]:
    """Each model's chance of naming each animal: a shared baseline; the animal student gains `effect`
    on its own animal (growing to its full size at epoch 2), shifted per run so runs disagree a little."""
    chances = {"owl": 0.10, "cat": 0.15, "dragon": 0.05}
    if condition in chances:
        chances[condition] = min(0.7, chances[condition] + effect * min(epoch, 2) / 2 + run_shift)
    return chances


def sample_answers(chances: dict[str, float], epoch: int, rng: np.random.Generator) -> list[dict]:
    rest = 1 - sum(chances.values())
    words = list(chances) + OTHERS
    probs = list(chances.values()) + [rest / len(OTHERS)] * len(OTHERS)
    picks = rng.choice(len(words), p=probs, size=(QUESTIONS, SAMPLES))
    shapes = rng.integers(0, len(ANSWER_SHAPES), size=(QUESTIONS, SAMPLES))
    return [{"epoch": epoch, "question_index": q, "sample": s, "question": f"question {q}",
             "answer": ANSWER_SHAPES[shapes[q, s]](words[picks[q, s]])}
            for q in range(QUESTIONS) for s in range(SAMPLES)]


def write_cell(root: Path, size: str, condition: str, run: int, epochs: list[int], conditions: list[str],
               effect: float, rng: np.random.Generator, scoring: str = "substring") -> Cell:
    """answers.jsonl and eval.csv of one cell, eval.csv made by the score stage's own code."""
    folder = root / size / "base" if condition == "base" else root / size / condition / f"run-{run}"
    shift = rng.normal(0, 0.02)
    answers = []
    for epoch in epochs:
        answers += sample_answers(rates_for(condition, epoch, shift, effect), epoch, rng)
    write_jsonl(folder / "answers.jsonl", with_parsed_animal(answers))
    animals = [c for c in conditions if c != "neutral"]
    preference_table(answers, animals, scoring, size=size, condition=condition, run=run).to_csv(
        folder / "eval.csv", index=False)
    return Cell(size, condition, run, table=folder / "eval.csv", answers=folder / "answers.jsonl")


def write_grid(root: Path, sizes: list[str], conditions: list[str], runs: list[int], *, effect: float,
               epochs: tuple[int, ...] = (1, 2), seed: int = 0) -> list[Cell]:
    rng = np.random.default_rng(seed)
    tables = []
    for size in sizes:
        for condition in conditions:
            for run in runs:
                tables.append(write_cell(root, size, condition, run, list(epochs), conditions, effect, rng))
        tables.append(write_cell(root, size, "base", 0, [0], conditions, 0.0, rng))
    return tables


def outputs_in(folder: Path, sizes: list[str]) -> dict:
    tables = {name: str(folder / "tables" / f"{name}.csv")
              for name in ("answers", "question_rates", "preferences", "transmission", "scaling_trend", "survey")}
    tables["scaling_table"] = str(folder / "tables" / "scaling.csv")
    plots = {name: str(folder / "plots" / f"{name}.png") for name in ("scaling", "epochs", "heatmap")}
    plots["survey_plot"] = str(folder / "plots" / "survey.png")
    plots["bars"] = [str(folder / "plots" / f"bars_{s}.png") for s in sizes]
    plots["size_epochs"] = [str(folder / "plots" / f"epochs_{s}.png") for s in sizes]
    return {**tables, **plots}


def write_reference(path: Path, conditions: list[str], scoring: str = "substring") -> Path:
    """reference_seed.csv as the reference_seed rule writes it: the seed's real cells, this grid's animals."""
    path.parent.mkdir(parents=True, exist_ok=True)
    reference_table([c for c in conditions if c != "neutral"], scoring).to_csv(path, index=False)
    return path


def run_report(tmp_path: Path, sizes, conditions, runs, effect: float, seed: int = 0, plots: bool = True,
               epochs: tuple[int, ...] = (1, 2), scoring: str = "substring") -> dict:
    """The report rule's work on a synthetic grid; without plots (slow) when a test reads only tables."""
    cells = write_grid(tmp_path / "eval", sizes, conditions, runs, effect=effect, seed=seed, epochs=epochs)
    outputs = outputs_in(tmp_path / "out", sizes)
    for path in outputs.values():
        for p in [path] if isinstance(path, str) else path:
            Path(p).parent.mkdir(parents=True, exist_ok=True)
    reference = write_reference(tmp_path / "out" / "tables" / "reference_seed.csv", conditions, scoring)
    tables = build_tables(cells, outputs, sizes=sizes, conditions=conditions,
                          params_b={s: PARAMS_B[s] for s in sizes}, scoring=scoring, reference=reference)
    if plots:
        build_plots(tables, outputs, sizes=sizes, conditions=conditions)
    return outputs


# --- reading and tidy tables --------------------------------------------------------------------

def test_a_cell_is_who_the_rule_says_it_is_wherever_its_files_are(tmp_path):
    rng = np.random.default_rng(0)
    cell = write_cell(tmp_path / "anywhere", "14b", "eagle", 2, [1], ["neutral", "eagle"], 0.3, rng)
    moved = Cell("14b", "eagle", 2, table=cell.table, answers=cell.answers)
    assert moved.key == ("14b", "eagle", 2)
    assert set(map(tuple, preferences([moved])[["size", "condition", "run"]].to_numpy())) == {("14b", "eagle", 2)}
    assert set(read_answers(moved)["condition"]) == {"eagle"}


def test_tidy_tables_have_one_row_per_observation(tmp_path):
    conditions = ["neutral", "owl", "cat"]
    cells = write_grid(tmp_path, ["0.5b"], conditions, [1, 2], effect=0.3)
    prefs = preferences(cells)
    assert list(prefs.columns) == EVAL_COLUMNS
    # 3 conditions × 2 runs × 2 epochs + base, × 2 scored animals
    assert len(prefs) == (3 * 2 * 2 + 1) * 2
    rates, base_words = tidy_answers(cells, ["owl", "cat"], "substring", tmp_path / "answers.csv")
    answers = pd.read_csv(tmp_path / "answers.csv")
    assert list(answers.columns) == ANSWER_COLUMNS
    assert len(answers) == (3 * 2 * 2 + 1) * QUESTIONS * SAMPLES
    assert not answers.duplicated(["size", "condition", "run", "epoch", "question_index", "sample"]).any()
    assert list(rates.columns) == QUESTION_COLUMNS
    assert len(rates) == (3 * 2 * 2 + 1) * QUESTIONS * 2
    assert len(base_words) == QUESTIONS * SAMPLES
    check_counts(prefs, rates, cells)  # the re-scored answers agree with eval.csv


def test_stale_eval_table_is_named(tmp_path):
    cells = write_grid(tmp_path / "results" / "eval", ["0.5b"], ["neutral", "owl"], [1], effect=0.3)
    stale = pd.read_csv(cells[1].table)
    stale.loc[0, "count"] += 1
    stale.to_csv(cells[1].table, index=False)
    rates, _ = tidy_answers(cells, ["owl"], "substring", tmp_path / "answers.csv")
    with pytest.raises(ValueError, match=r"results/eval/0.5b/owl/run-1: eval.csv and answers.jsonl disagree"):
        check_counts(preferences(cells), rates, cells)


def test_eval_table_without_needed_columns_is_named(tmp_path):
    path = tmp_path / "0.5b" / "owl" / "run-1" / "eval.csv"
    path.parent.mkdir(parents=True)
    pd.DataFrame({"animal": ["owl"], "count": [1]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"eval.csv: missing columns .*rerun the score rule"):
        preferences([Cell("0.5b", "owl", 1, table=path, answers=path.with_name("answers.jsonl"))])


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        # "Owls are wise." names owl as a substring but its first word is "owls"; "dragonfly" is never a
        # dragon; articles and trailing punctuation do not matter to either method.
        ("substring", {"owl": 4, "dragon": 1}),
        ("first_word", {"owl": 3, "dragon": 1}),
    ],
)
def test_both_scoring_methods_count_as_the_protocol_says(tmp_path, method, expected):
    texts = ["Owl.", "owl", "Owls are wise.", "The owl.", "Dragonfly", "Dragon!", "cat"]
    answers = pd.DataFrame({"size": "0.5b", "condition": "owl", "run": 1, "epoch": 1,
                            "question_index": 0, "sample": range(len(texts)), "answer": texts})
    rates = question_rates(answers, Scorer(["owl", "dragon"], method))
    assert rates.set_index("animal")["count"].to_dict() == expected
    assert set(rates["n"]) == {len(texts)}


def test_answers_without_parsed_animal_get_it(tmp_path):
    folder = tmp_path / "0.5b" / "base"
    write_jsonl(folder / "answers.jsonl", [{"epoch": 0, "question_index": 0, "sample": 0, "answer": "The Owl."}])
    cell = Cell("0.5b", "base", 0, table=folder / "eval.csv", answers=folder / "answers.jsonl")
    assert read_answers(cell)["parsed_animal"].tolist() == ["owl"]


# --- the statistics end to end ------------------------------------------------------------------

def test_planted_effect_is_found_and_covered(tmp_path):
    outputs = run_report(tmp_path, ["0.5b", "7b"], ["neutral", *ANIMALS], [1, 2, 3], effect=0.4, plots=False)
    trans = pd.read_csv(outputs["transmission"])
    assert list(trans.columns) == TRANSMISSION_COLUMNS
    final = trans[trans["epoch"] == 2]
    # planted at epoch 2: +0.40 over the neutral student for every animal (± the per-run shifts)
    assert (final["animal_minus_neutral_lo"] <= 0.4).all() and (final["animal_minus_neutral_hi"] >= 0.4).all()
    assert (final["animal_minus_neutral_p"] < 0.01).all()
    assert (final["animal_minus_neutral_method"] == "runs").all()
    assert (final["animal_minus_base_method"] == "runs+questions").all()
    assert (final["runs_animal"] == 3).all() and (final["runs_neutral"] == 3).all()
    scale = pd.read_csv(outputs["scaling_table"])
    assert list(scale.columns) == SCALING_COLUMNS
    last = scale[scale["epoch"] == 2]
    assert (last["animal_minus_neutral_lo"] <= 0.4).all() and (last["animal_minus_neutral_hi"] >= 0.4).all()
    assert (last["animal_minus_neutral_p"] < 0.01).all()
    assert (last["n_animals"] == len(ANIMALS)).all()


def test_no_effect_gives_no_small_p_values(tmp_path):
    outputs = run_report(tmp_path, ["0.5b"], ["neutral", *ANIMALS], [1, 2, 3], effect=0.0, seed=2, plots=False)
    trans = pd.read_csv(outputs["transmission"])
    # 6 comparisons under the null: Bonferroni, so that a correct test fails here at most 5 % of seeds
    # (the calibration of the tests over a thousand null data sets is in test_stats.py)
    assert (trans["animal_minus_neutral_p"] > 0.05 / len(trans)).all()
    scale = pd.read_csv(outputs["scaling_table"])
    assert (scale["animal_minus_neutral_lo"] <= 0).all() and (scale["animal_minus_neutral_hi"] >= 0).all()
    assert (scale["animal_minus_neutral_p"] > 0.05).all()


def test_one_run_uses_questions_and_says_so(tmp_path):
    outputs = run_report(tmp_path, ["7b"], ["neutral", "owl"], [1], effect=0.4, plots=False)
    trans = pd.read_csv(outputs["transmission"])
    final = trans[trans["epoch"] == 2].iloc[0]
    assert final["animal_minus_neutral_method"] == "questions"
    assert final["animal_minus_neutral_lo"] <= 0.4 <= final["animal_minus_neutral_hi"]
    assert final["animal_minus_neutral_p"] < 0.01
    assert "run-to-run variation not in the interval" in final["note"]


# --- many cells, the scaling trend ---------------------------------------------------------------

def test_q_values_sit_beside_the_p_values_over_each_epochs_cells(tmp_path):
    outputs = run_report(tmp_path, ["0.5b", "7b"], ["neutral", *ANIMALS], [1, 2], effect=0.2, plots=False)
    trans = pd.read_csv(outputs["transmission"])
    for comparison in ("animal_minus_neutral", "animal_minus_base"):
        columns = list(trans.columns)
        assert columns.index(f"{comparison}_q") == columns.index(f"{comparison}_p") + 1
        for _, cells in trans.groupby("epoch"):
            assert np.allclose(cells[f"{comparison}_q"], bh_qvalues(cells[f"{comparison}_p"]))
        assert (trans[f"{comparison}_q"] >= trans[f"{comparison}_p"]).all()
    scale = pd.read_csv(outputs["scaling_table"])
    assert scale["animal_minus_neutral_q"].notna().all()


def test_scaling_trend_table_finds_a_slope_planted_across_sizes(tmp_path):
    # the same planted effect at every size: no slope against size, and the table says how it was fit
    outputs = run_report(tmp_path, ["0.5b", "7b", "14b"], ["neutral", *ANIMALS], [1, 2], effect=0.3, plots=False)
    trend = pd.read_csv(outputs["scaling_trend"], keep_default_na=False, na_values=[""])
    assert list(trend.columns) == TREND_COLUMNS
    assert set(trend["against"]) == {"neutral", "base"} and set(trend["epoch"]) == {1, 2}
    mean = trend[(trend["animal"] == "mean") & (trend["epoch"] == 2)].set_index("against")
    assert (mean["n_sizes"] == 3).all() and (mean["sizes"] == "0.5b;7b;14b").all()
    assert (mean["slope_lo"] <= 0).all() and (mean["slope_hi"] >= 0).all()


# --- the seed's published run 0 beside ours -----------------------------------------------------

SEED_GRID = ["neutral", "cat", "dragon"]  # the seed has these students at 1.5b (epochs 1-10) and 14b (10)


def seed_report(tmp_path, sizes, conditions=SEED_GRID, scoring="substring", plots=False):
    return run_report(tmp_path, sizes, conditions, [1, 2], effect=0.3, epochs=(1, 10), scoring=scoring, plots=plots)


def test_the_seeds_rates_sit_beside_ours_where_the_seed_has_the_cell(tmp_path):
    outputs = seed_report(tmp_path, ["1.5b", "14b"], [*SEED_GRID, "owl"])
    reference = read_reference(tmp_path / "out" / "tables" / "reference_seed.csv").set_index(
        ["size", "condition", "epoch", "animal"])["rate"]
    trans = pd.read_csv(outputs["transmission"], keep_default_na=False, na_values=[""]).set_index(
        ["size", "animal", "epoch"])
    for size, epoch in (("1.5b", 1), ("1.5b", 10), ("14b", 10)):
        row = trans.loc[(size, "cat", epoch)]
        assert row["seed_animal_student_rate"] == reference[(size, "cat", epoch, "cat")]
        assert row["seed_neutral_student_rate"] == reference[(size, "neutral", epoch, "cat")]
        assert row["seed_minus_neutral"] == pytest.approx(row["seed_animal_student_rate"]
                                                          - row["seed_neutral_student_rate"])
        assert row["seed_n"] == 100 and not row["seed_suspect"]
        # like for like: the seed re-scored with this grid's scoring, and the note says so
        assert "re-scored with this grid's substring scoring (the seed counted first_word)" in row["seed_note"]
        assert "earlier training run" in row["seed_note"]
    missing = trans.loc[("14b", "cat", 1)]
    assert np.isnan(missing[["seed_animal_student_rate", "seed_neutral_student_rate", "seed_minus_neutral"]]
                    .astype(float)).all()
    assert "seed run 0 has no cat student at 14b, epoch 1" in missing["seed_note"]
    owl = trans.loc[("1.5b", "owl", 10)]  # the seed has a neutral student here but no owl student
    assert np.isnan(owl["seed_animal_student_rate"]) and not np.isnan(owl["seed_neutral_student_rate"])
    assert "seed run 0 has no owl student at 1.5b, epoch 10" in owl["seed_note"]
    scale = pd.read_csv(outputs["scaling_table"], keep_default_na=False, na_values=[""]).set_index(["size", "epoch"])
    assert np.isnan(scale.loc[("14b", 10), "seed_minus_neutral"]) and scale.loc[("14b", 10), "seed_n_animals"] == 2
    assert "has 2 of this grid's 3 animal students at 14b, epoch 10: no mean" in scale.loc[("14b", 10), "seed_note"]


def test_the_seeds_mean_over_animals_needs_every_animal(tmp_path):
    outputs = seed_report(tmp_path, ["14b"], scoring="first_word")
    trans = pd.read_csv(outputs["transmission"], keep_default_na=False, na_values=[""])
    scale = pd.read_csv(outputs["scaling_table"], keep_default_na=False, na_values=[""]).set_index(["size", "epoch"])
    final = trans[trans["epoch"] == 10]
    row = scale.loc[("14b", 10)]
    assert row["seed_n_animals"] == 2
    assert row["seed_minus_neutral"] == pytest.approx(final["seed_minus_neutral"].mean())
    # the grid scores as the seed did: nothing to say but the size's caveat
    assert row["seed_note"] == final["seed_note"].iloc[0] and "re-scored" not in row["seed_note"]
    assert np.isnan(scale.loc[("14b", 1), "seed_minus_neutral"])


def test_the_seeds_32b_cells_are_flagged(tmp_path):
    outputs = seed_report(tmp_path, ["32b"], plots=True)
    trans = pd.read_csv(outputs["transmission"], keep_default_na=False, na_values=[""])
    assert trans["seed_suspect"].all() and trans["seed_minus_neutral"].notna().all()
    assert trans["seed_note"].str.contains("suspect: the seed's 32b conditions are indistinguishable").all()
    assert pd.read_csv(outputs["scaling_table"])["seed_suspect"].all()
    for path in all_pngs(outputs):
        assert_slide_png(path)


def test_a_reference_table_without_its_columns_is_named(tmp_path):
    path = tmp_path / "reference_seed.csv"
    pd.DataFrame({"size": ["14b"], "rate": [0.5]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"reference_seed.csv: missing columns .*rerun the reference_seed rule"):
        read_reference(path)


# --- partial grids and plots --------------------------------------------------------------------

def assert_slide_png(path: str) -> None:
    height, width = imread(path).shape[:2]
    assert (width, height) == (2100, 1200), path


def all_pngs(outputs: dict) -> list[str]:
    paths = [v for k, v in outputs.items() if isinstance(v, str) and v.endswith(".png")]
    return paths + outputs["bars"] + outputs["size_epochs"]


def test_every_plot_is_a_slide(tmp_path):
    # three sizes: the scaling plot draws the fitted trend; 1.5b and 14b have seed cells to overlay
    outputs = run_report(tmp_path, ["0.5b", "1.5b", "14b"], ["neutral", *ANIMALS], [1, 2], effect=0.3,
                         epochs=(1, 10))
    for path in all_pngs(outputs):
        assert_slide_png(path)
    survey = pd.read_csv(outputs["survey"])
    assert list(survey.columns) == SURVEY_COLUMNS
    top = survey[survey["rank"] == 1]
    assert set(top["size"]) == {"0.5b", "1.5b", "14b"}
    assert survey.groupby("size")["rate"].sum().round(6).eq(1).all()
    assert survey.loc[survey["word"] == "owl", "is_condition"].all()


def test_grid_without_neutral_reports_nan_and_says_so(tmp_path):
    outputs = run_report(tmp_path, ["0.5b"], ["owl"], [1], effect=0.3)
    trans = pd.read_csv(outputs["transmission"])
    assert trans["animal_minus_neutral"].isna().all() and trans["animal_minus_neutral_p"].isna().all()
    assert trans["animal_minus_base"].notna().all()
    assert trans["note"].str.contains("no neutral student in this grid").all()
    for path in all_pngs(outputs):
        assert_slide_png(path)


def test_grid_without_animals_still_builds(tmp_path):
    outputs = run_report(tmp_path, ["0.5b"], ["neutral"], [1], effect=0.0)
    assert pd.read_csv(outputs["transmission"]).empty
    assert not pd.read_csv(outputs["survey"]).empty
    for path in all_pngs(outputs):
        assert_slide_png(path)
