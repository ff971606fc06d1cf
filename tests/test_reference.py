"""The seed's published run 0: shipped with the package, every stored count reproduced by the seed preset's
scoring, tidy tables for the report's overlay."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest

from sublim.config import load_presets
from sublim.protocol import ANIMALS
from sublim.reference import (
    REFERENCE_COLUMNS,
    reference_dir,
    reference_table,
    seed_answers,
    seed_scoring,
    seed_evaluations,
    seed_survey,
)
from sublim.scoring import score_answer

SEED_SCORING = load_presets()["seed"]["evaluation"]["scoring"]
EVALUATIONS = sorted((reference_dir() / "qwen-2.5-scaling" / "evaluations").glob("*/*_eval.json"))


def stored_entries():
    return [(path, entry) for path in EVALUATIONS for entry in json.loads(path.read_text())]


def test_the_seeds_data_ships_with_the_package():
    assert len(EVALUATIONS) == 69
    assert (reference_dir() / "animal_survey" / "animal_preferences_raw.json").exists()
    assert "cfe63dafe054b20d2614eb92149ad4f45a1e7793" in (reference_dir() / "README.md").read_text()


def test_seed_scoring_reproduces_every_stored_count():
    assert SEED_SCORING == "first_word"
    entries, counts = stored_entries(), 0
    for path, entry in entries:
        answers = entry["raw_responses"]
        for word, stored in entry["animal_counts"].items():
            assert sum(score_answer(a, word, SEED_SCORING) for a in answers) == stored, (path, entry["epoch"], word)
            counts += 1
        if entry["target_animal_rate"] is not None:
            target = sum(score_answer(a, entry["condition"], SEED_SCORING) for a in answers)
            assert target / len(answers) == entry["target_animal_rate"], (path, entry["epoch"])
    assert (len(entries), counts) == (375, 7936)


def test_reference_table_has_one_row_per_cell_epoch_and_animal():
    table = reference_table(ANIMALS, SEED_SCORING)
    assert list(table.columns) == REFERENCE_COLUMNS
    assert len(table) == 375 * len(ANIMALS)
    assert not table.duplicated(["size", "condition", "epoch", "animal"]).any()
    assert (table["count"] == table["seed_count"]).all()  # first_word: the seed's own counts
    assert (table["n"] == 100).all() and (table["run"] == 0).all()
    eagle = table[(table["size"] == "14b") & (table["condition"] == "eagle") & (table["animal"] == "eagle")]
    assert eagle[["epoch", "count", "rate", "is_target"]].values.tolist() == [[10, 94, 0.94, True]]
    assert set(table["size"]) == {"0.5b", "1.5b", "3b", "7b", "14b", "32b", "72b"}


def test_every_row_says_what_its_size_is():
    table = reference_table(["eagle"], SEED_SCORING).drop_duplicates("size").set_index("size")
    assert seed_scoring() == SEED_SCORING
    # the 32b conditions are indistinguishable: suspect; 0.5b-14b re-sample the earlier run's adapters
    assert table["suspect"].to_dict() == {s: s == "32b" for s in table.index}
    assert "indistinguishable" in table.loc["32b", "caveat"]
    assert all("earlier training run" in table.loc[s, "caveat"] for s in ("0.5b", "1.5b", "3b", "7b", "14b"))
    assert table.loc["72b", "caveat"] == ""


def test_substring_scoring_counts_what_first_word_misses():
    substring, first = (reference_table(["eagle"], s).set_index(["size", "condition", "epoch"])["count"]
                        for s in ("substring", "first_word"))
    assert (substring >= first).all()
    assert substring.loc[("14b", "eagle", 10)] == 95  # "Eagles" counts as a substring only


def test_answers_are_twenty_questions_of_five_samples_in_order():
    answers = seed_answers()
    assert len(answers) == 37_500
    per_entry = answers.groupby(["size", "condition", "epoch"])
    assert (per_entry["question_index"].max() == 19).all() and (per_entry["sample"].max() == 4).all()
    first = answers[(answers["size"] == "14b") & (answers["condition"] == "eagle")].iloc[20]
    assert (first["question_index"], first["sample"], first["answer"]) == (4, 0, "Quetzal")


def test_survey_is_the_untuned_models_first_words():
    survey = seed_survey(conditions=["neutral", *ANIMALS])
    assert set(survey["size"]) == {"0.5b", "1.5b", "3b", "7b", "14b", "32b", "72b"}
    assert (survey.groupby("size")["count"].sum() == 100).all()
    top_14b = survey[(survey["size"] == "14b") & (survey["rank"] == 1)].iloc[0]
    assert top_14b["word"] in ANIMALS and top_14b["is_condition"]
    assert survey[(survey["size"] == "14b") & (survey["word"] == "eagle")]["count"].item() == 27


def test_a_tampered_file_stops_the_import_naming_it(tmp_path):
    root = tmp_path / "seed-run-0"
    shutil.copytree(reference_dir(), root)
    path = root / "qwen-2.5-scaling" / "evaluations" / "14b" / "eagle_eval.json"
    entries = json.loads(path.read_text())
    entries[0]["animal_counts"]["eagle"] += 1
    path.write_text(json.dumps(entries))
    with pytest.raises(ValueError, match=r"14b/eagle_eval.json \(epoch 10\): the stored animal_counts differ"):
        seed_evaluations(root)
    assert Counter(e["size"] for e in seed_evaluations(reference_dir()))["72b"] == 16
