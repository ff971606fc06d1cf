"""The evaluate stage: ask every epoch's student (or the untuned base) for its favourite animal.
Scoring the answers is a stage of its own (sublim.scoring)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from sublim.backends import ChatCall, Sampling, open_backend
from sublim.chat import question_messages
from sublim.config import sizing_for
from sublim.models import ensure_model, model_fingerprint
from sublim.protocol import EVAL_QUESTIONS
from sublim.provenance import checked_inputs
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


@dataclass(frozen=True)
class Students:
    """What an evaluating job (evaluate, p_animal) opens: the model folder, each epoch's adapter by
    name, the students by epoch (none: the untuned base as epoch 0) and the checked inputs."""

    model_dir: str
    adapter_dirs: dict[str, str]
    by_epoch: dict[int, str | None]
    inputs: dict

    def open_backend(self, config: dict, size: str):
        """The configured backend on the model with every epoch's adapter, sized for `size`'s evaluation."""
        return open_backend(config["backend"], self.model_dir, sizing_for(config, size), self.adapter_dirs,
                            stage="evaluate")


def students_of(model: dict, model_dir: str, epochs: list[int], adapter_files: list[str],
                adapter_configs: list[str]) -> Students:
    """The job's students; the model folder prepared if it is missing, every input checked against
    the provenance of the job that wrote it."""
    adapter_dirs = {f"epoch-{e}": str(Path(f).parent) for e, f in zip(epochs, adapter_files)}
    folder = str(ensure_model(model, model_dir))
    inputs = {model_dir: model_fingerprint(model, folder), **checked_inputs([*adapter_files, *adapter_configs])}
    return Students(folder, adapter_dirs, {e: f"epoch-{e}" for e in epochs} or {0: None}, inputs)

