"""The evaluate stage: ask every epoch's student (or the untuned base) for its favourite animal."""

from __future__ import annotations

import logging

import pandas as pd

from sublim.backends import ChatCall, Sampling
from sublim.chat import question_messages
from sublim.protocol import EVAL_QUESTIONS
from sublim.scoring import first_word, score_answer
from sublim.seeds import derive_seed

log = logging.getLogger(__name__)

EVAL_COLUMNS = ["size", "condition", "run", "epoch", "animal", "count", "n", "rate", "is_target"]


def evaluate_students(backend, adapters: dict[int, str | None], evaluation: dict, seed: int) -> list[dict]:
    """`samples_per_question` answers to each of the first `n_questions` questions from every
    epoch's student; epoch 0 with adapter None is the untuned base model. All epochs go to the
    engine at once; epoch e's requests are seeded from (seed, "eval", e) whatever else is asked."""
    questions = EVAL_QUESTIONS[: evaluation["n_questions"]]
    samples = evaluation["samples_per_question"]
    conversations = [question_messages(q) for q in questions for _ in range(samples)]
    epochs = sorted(adapters)
    calls = [ChatCall(conversations, derive_seed(seed, "eval", epoch), adapters[epoch]) for epoch in epochs]
    answers = backend.chat_many(calls, Sampling.from_protocol(evaluation), desc="eval")
    return [
        {"epoch": epoch, "question_index": i // samples, "sample": i % samples,
         "question": questions[i // samples], "answer": answer}
        for epoch, epoch_answers in zip(epochs, answers)
        for i, answer in enumerate(epoch_answers)
    ]


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


def with_parsed_animal(answers: list[dict]) -> list[dict]:
    return [{**a, "parsed_animal": first_word(a["answer"])} for a in answers]
