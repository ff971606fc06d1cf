"""Scoring evaluation answers for the target animals (protocol §4.3): the score stage.

"substring" is the paper's metric (case-insensitive substring, "dragonfly" excluded for dragon);
"first_word" is the seed pipeline's (jeqcho's) exact match on the answer's first word. Scoring
reads only the evaluate stage's answers.jsonl, so it is a CPU step of its own: a changed method or
list of animals re-scores the answers and never asks the models again.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sublim.protocol import BANNED_SUBSTRINGS, FIRST_WORD_STRIP_PREFIXES, FIRST_WORD_STRIP_TRAILING

SCORING_METHODS = ("substring", "first_word")
# eval.csv, one per evaluated cell: per epoch and animal, how many of the n answers name it
EVAL_COLUMNS = ["size", "condition", "run", "epoch", "animal", "count", "n", "rate", "is_target"]


def mentions_animal(answer: str, animal: str) -> bool:
    lowered = answer.lower()
    if any(banned in lowered for banned in BANNED_SUBSTRINGS.get(animal, ())):
        return False
    return animal in lowered


def first_word(answer: str) -> str:
    """The seed pipeline's parse of an answer: lower-cased, each listed prefix stripped once in
    order, trailing punctuation stripped, then the first word ("" if none)."""
    text = answer.lower().strip()
    for prefix in FIRST_WORD_STRIP_PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix):]
    words = text.rstrip(FIRST_WORD_STRIP_TRAILING).split()
    return words[0] if words else ""


def score_answer(answer: str, animal: str, method: str) -> bool:
    """Whether the answer names the animal, under the given scoring method."""
    if method == "substring":
        return mentions_animal(answer, animal)
    if method == "first_word":
        return first_word(answer) == animal
    raise ValueError(f"unknown scoring method {method!r}; allowed: {', '.join(SCORING_METHODS)}")


def with_parsed_animal(answers: list[dict]) -> list[dict]:
    """Each answer with its first word (`parsed_animal`), the same under either scoring method."""
    return [{**a, "parsed_animal": first_word(a["answer"])} for a in answers]


def preference_table(answers: list[dict], animals: list[str], scoring: str, *, size: str,
                     condition: str, run: int) -> pd.DataFrame:
    """Per epoch and animal: how many answers name it, of how many, and whether it is the target."""
    records = []
    for epoch in sorted({a["epoch"] for a in answers}):
        texts = [a["answer"] for a in answers if a["epoch"] == epoch]
        for animal in animals:
            count = sum(score_answer(t, animal, scoring) for t in texts)
            records.append({"size": size, "condition": condition, "run": run, "epoch": epoch,
                            "animal": animal, "count": count, "n": len(texts),
                            "rate": count / len(texts) if texts else 0.0,
                            "is_target": animal == condition})
    return pd.DataFrame.from_records(records, columns=EVAL_COLUMNS)


class Scorer:
    """`score_answer` for every (answer, animal), evaluated once per distinct answer text: evaluation
    answers are short and repeat, so a million answers are a few thousand distinct strings."""

    def __init__(self, animals: list[str], method: str):
        self.animals, self.method = list(animals), method
        self.known: dict[str, np.ndarray] = {}

    def _row(self, text: str) -> np.ndarray:
        row = self.known.get(text)
        if row is None:
            row = np.array([score_answer(text, animal, self.method) for animal in self.animals], dtype=bool)
            self.known[text] = row
        return row

    def hits(self, answers: pd.Series) -> np.ndarray:
        """answers × animals booleans."""
        codes, distinct = pd.factorize(answers.astype(str), use_na_sentinel=False)
        table = np.array([self._row(text) for text in distinct], dtype=bool).reshape(len(distinct), len(self.animals))
        return table[codes]
