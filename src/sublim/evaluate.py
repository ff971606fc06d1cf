"""The evaluate stage: ask every epoch's student (or the untuned base) for its favourite animal.
Scoring the answers is a stage of its own (sublim.scoring)."""

from __future__ import annotations

import logging

from sublim.backends import Sampling
from sublim.chat import question_messages
from sublim.protocol import EVAL_QUESTIONS
from sublim.seeds import derive_seed

log = logging.getLogger(__name__)


def ask_questions(backend, evaluation: dict, seed: int, adapter: str | None, epoch: int) -> list[dict]:
    """`samples_per_question` answers to each of the first `n_questions` questions."""
    questions = EVAL_QUESTIONS[: evaluation["n_questions"]]
    samples = evaluation["samples_per_question"]
    conversations = [question_messages(q) for q in questions for _ in range(samples)]
    answers = backend.chat(conversations, Sampling.from_protocol(evaluation), seed=derive_seed(seed, "eval", epoch),
                           adapter=adapter, desc=f"eval epoch {epoch}")
    return [
        {"epoch": epoch, "question_index": i // samples, "sample": i % samples,
         "question": questions[i // samples], "answer": answer}
        for i, answer in enumerate(answers)
    ]


def evaluate_students(backend, adapters: dict[int, str | None], evaluation: dict, seed: int) -> list[dict]:
    """Answers of every epoch's student; epoch 0 with adapter None is the untuned base model."""
    rows = []
    for epoch, adapter in sorted(adapters.items()):
        rows += ask_questions(backend, evaluation, seed, adapter, epoch)
    return rows
