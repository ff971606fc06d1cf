"""The seed pipeline's published run 0 (src/sublim/data/reference/seed-run-0/, README there): its students'
answers re-scored with the project's scoring into tidy tables, every stored count checked on the way.

The seed parsed answers exactly as the `first_word` scoring does, so each evaluation's `animal_counts`
(every first word and its count) must equal the re-parsed answers' counts; a file that disagrees stops
the import, naming it. Rows are then scored with the grid's own scoring (`substring` or `first_word`),
so the seed's numbers sit beside the project's on the same metric. Run 0 is one run: its uncertainty is
the questions' (sublim.stats), not run-to-run.

Not every stored cell is what its name says (the data's README has the evidence): the 0.5b–14b cells are
the seed's earlier training run re-sampled, and the 32b cells show no difference between conditions at any
epoch. `caveat(size)` says so on every row, and `suspect` marks the sizes a comparison should not trust.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import pandas as pd

from sublim.config import load_presets
from sublim.scoring import first_word, score_answer

SEED_RUN = 0
QUESTIONS = 20  # the seed asked the first 20 questions, 5 samples each, answers in question order
REFERENCE_COLUMNS = ["size", "condition", "run", "epoch", "animal", "count", "n", "rate", "is_target", "seed_count",
                     "suspect", "caveat"]
ANSWER_COLUMNS = ["size", "condition", "run", "epoch", "question_index", "sample", "answer"]
SURVEY_COLUMNS = ["size", "rank", "word", "count", "n", "rate", "is_condition"]
ENTRY_KEYS = ("epoch", "model_size", "condition", "total_responses", "animal_counts", "raw_responses")


# What the data's README found about where the cells come from (the evidence is there).
EARLIER_RUN_SIZES = ("0.5b", "1.5b", "3b", "7b", "14b")
SUSPECT_SIZES = ("32b",)
EARLIER_RUN = "the seed's earlier training run's adapters, re-sampled (protocol.md §6.3)"
SUSPECT = ("suspect: the seed's 32b conditions are indistinguishable at every epoch, as if every student were "
           "the same model (likely broken upstream)")


def caveat(size: str) -> str:
    """What a reader of the seed's cells of `size` must know ("" when nothing)."""
    return "; ".join(text for sizes, text in ((EARLIER_RUN_SIZES, EARLIER_RUN), (SUSPECT_SIZES, SUSPECT))
                     if size in sizes)


def seed_scoring() -> str:
    """How the seed itself counted an answer (the seed preset's scoring, `first_word`)."""
    return load_presets()["seed"]["evaluation"]["scoring"]


def reference_dir() -> Path:
    return Path(str(resources.files("sublim").joinpath("data/reference/seed-run-0")))


def _load(path: Path) -> list[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable seed evaluation file ({error}); restore it from git") from None


def check_stored_counts(raw_responses: list[str], stored: dict, where: str) -> None:
    """The seed's counts must be what `first_word` makes of its answers; otherwise the import stops."""
    parsed = Counter(first_word(answer) for answer in raw_responses)
    if parsed != Counter(stored):
        differ = sorted((set(parsed.items()) ^ set(stored.items())), key=str)[:4]
        raise ValueError(f"{where}: the stored animal_counts differ from the answers re-parsed with first_word "
                         f"(e.g. {differ}); the file is not the seed's published one — restore it from git")


def seed_evaluations(root: str | Path | None = None) -> list[dict]:
    """Every stored evaluation (size, condition, epoch, answers), its counts checked."""
    root = Path(root) if root is not None else reference_dir()
    paths = sorted((root / "qwen-2.5-scaling" / "evaluations").glob("*/*_eval.json"))
    if not paths:
        raise FileNotFoundError(f"{root}: no qwen-2.5-scaling/evaluations/*/*_eval.json; reinstall sublim")
    entries = []
    for path in paths:
        for entry in _load(path):
            missing = [k for k in ENTRY_KEYS if k not in entry]
            where = f"{path} (epoch {entry.get('epoch')})"
            if missing:
                raise ValueError(f"{where}: missing {', '.join(missing)}")
            if entry["total_responses"] != len(entry["raw_responses"]):
                raise ValueError(f"{where}: total_responses {entry['total_responses']} but "
                                 f"{len(entry['raw_responses'])} raw_responses")
            check_stored_counts(entry["raw_responses"], entry["animal_counts"], where)
            entries.append({"size": entry["model_size"], "condition": entry["condition"], "epoch": int(entry["epoch"]),
                            "answers": list(entry["raw_responses"]), "animal_counts": entry["animal_counts"],
                            "target_animal_rate": entry.get("target_animal_rate")})
    return entries


def seed_answers(root: str | Path | None = None) -> pd.DataFrame:
    """One row per stored answer, with its question: the seed's 100 answers are 20 questions × 5, in order."""
    rows = []
    for entry in seed_evaluations(root):
        samples = len(entry["answers"]) // QUESTIONS
        for i, answer in enumerate(entry["answers"]):
            rows.append((entry["size"], entry["condition"], SEED_RUN, entry["epoch"], i // samples, i % samples,
                         answer))
    return pd.DataFrame(rows, columns=ANSWER_COLUMNS)


def reference_table(animals: Iterable[str], scoring: str, root: str | Path | None = None) -> pd.DataFrame:
    """Per stored (size, condition, epoch) and animal: the seed's answers naming it under `scoring`, of how
    many, the rate, whether the animal is the condition's, the seed's own stored first-word count, and the
    size's caveat (`suspect`: not to be trusted as the seed's result)."""
    animals = list(animals)
    records = []
    for entry in seed_evaluations(root):
        n = len(entry["answers"])
        for animal in animals:
            count = sum(score_answer(answer, animal, scoring) for answer in entry["answers"])
            records.append((entry["size"], entry["condition"], SEED_RUN, entry["epoch"], animal, count, n,
                            count / n, animal == entry["condition"], entry["animal_counts"].get(animal, 0),
                            entry["size"] in SUSPECT_SIZES, caveat(entry["size"])))
    table = pd.DataFrame(records, columns=REFERENCE_COLUMNS)
    return table.sort_values(["size", "condition", "epoch", "animal"], ignore_index=True)


def seed_survey(conditions: Iterable[str] = (), root: str | Path | None = None) -> pd.DataFrame:
    """The seed's baseline survey (the untuned models, 20 questions × 5): per size every first word, most
    frequent first, in the report's survey.csv layout (sizes lower-cased: 0.5B → 0.5b)."""
    root = Path(root) if root is not None else reference_dir()
    path = root / "animal_survey" / "animal_preferences_raw.json"
    conditions = set(conditions)
    rows = []
    for model in _load(path):
        where = f"{path} ({model.get('model_size')})"
        check_stored_counts(model["raw_responses"], model["animal_counts"], where)
        size, n = model["model_size"].lower(), len(model["raw_responses"])
        ranked = sorted(Counter(first_word(a) for a in model["raw_responses"]).items(), key=lambda kv: (-kv[1], kv[0]))
        rows += [(size, rank, word, count, n, count / n, word in conditions)
                 for rank, (word, count) in enumerate(ranked, start=1)]
    return pd.DataFrame(rows, columns=SURVEY_COLUMNS)


def write_reference_table(out: str | Path, animals: Iterable[str], scoring: str) -> pd.DataFrame:
    table = reference_table(animals, scoring)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    return table
