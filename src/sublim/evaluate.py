"""The evaluate stage: ask every epoch's student (or the untuned base) for its favourite animal.
Scoring the answers is a stage of its own (sublim.scoring)."""

from __future__ import annotations

import logging

from sublim.backends import ChatCall, Sampling
from sublim.chat import question_messages
from sublim.protocol import EVAL_QUESTIONS
from sublim.seeds import derive_seed

log = logging.getLogger(__name__)


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
