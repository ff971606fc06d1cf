"""P(animal): the probability a student gives to an animal as the opening of its answer, read from the
model's logprobs instead of sampled — the evaluation's questions, one exact number per question, no
sampling noise (README.md, "P(animal)").

Definition. For one question (the chat prompt the evaluation sends, generation prompt included) and one
animal, P(animal) = Σ_v P(the answer's first tokens are tokens(v)) over the name's variants v: title,
lower and upper case ("Owl", "owl", "OWL"), each as the answer's first characters and after one leading
space (" Owl", " owl", " OWL"). tokens(v) is the tokenizer's own encoding of v alone (its canonical
tokenisation; e.g. SmolLM2 writes "Owl" as "O" + "wl" and " Owl" as one token); the model spelling a
variant with other tokens is not counted. P(tokens) is the product of each token's conditional
probability given the prompt and the tokens before it, at temperature 1: the model's own distribution,
the one the protocol samples (top_p 1, top_k off). The variants' events are disjoint — no variant's
tokens begin another's (checked), as no variant's text begins another's — so they add.

Like the paper's substring scoring, an answer opening with a longer word that begins with the name's
tokens counts ("Owlet"; a plural where its tokens extend the name's). Where that scoring excludes a word
(dragonfly for dragon: protocol.yaml `banned_substrings`), the probability of each excluded word's variant
whose tokens extend the name variant's is subtracted. Not counted: answers naming the animal after other
words ("The owl"), which the sampled rate under substring scoring does count — P(animal) is about the
opening word, which is what the one-word questions ask for.

The report averages P(animal) over the questions (and runs) exactly as it averages the sampled per-question
rates, with the same intervals and tests (sublim.report.p_animal_tables). This module is the GPU job's
side and imports nothing of the report's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sublim.backends import ScoreCall
from sublim.chat import question_messages
from sublim.config import animals
from sublim.protocol import ANIMALS, BANNED_SUBSTRINGS, EVAL_QUESTIONS

log = logging.getLogger(__name__)

CASES = (str.capitalize, str.lower, str.upper)
LEADS = ("", " ")
CELL_COLUMNS = ["size", "condition", "run", "epoch", "question_index", "animal", "p_animal"]


def candidates(conditions: list[str]) -> list[str]:
    """The animals every P(animal) job scores: the protocol's 15 and any other animal of the grid. A grid
    of the protocol's animals can gain or lose one without any P(animal) job running again."""
    return list(ANIMALS) + [a for a in animals(conditions) if a not in ANIMALS]


def _spellings(word: str) -> list[tuple[str, object]]:
    """(lead, case) of each spelling of `word` that counts, in a fixed order, one per distinct text."""
    texts = {}
    for lead in LEADS:
        for case in CASES:
            texts.setdefault(lead + case(word), (lead, case))
    return list(texts.values())


def name_variants(word: str) -> list[str]:
    """The spellings of `word` that count, in a fixed order, each once."""
    return [lead + case(word) for lead, case in _spellings(word)]


@dataclass(frozen=True)
class Term:
    """One continuation whose probability enters an animal's P(animal): +1 a name variant, -1 an
    excluded word that extends one."""

    animal: str
    text: str
    tokens: tuple[int, ...]
    sign: int


def _encode(tokenizer, texts: list[str]) -> list[tuple[int, ...]]:
    return [tuple(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _nested(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    shorter = min(len(a), len(b))
    return a[:shorter] == b[:shorter]


def animal_terms(tokenizer, animal_names: list[str]) -> list[Term]:
    """Every animal's name variants (+1) and the excluded words' variants that extend them (-1), tokenised."""
    terms = []
    for animal in animal_names:
        spellings = _spellings(animal)
        names = _encode(tokenizer, [lead + case(animal) for lead, case in spellings])
        for (lead, case), ids in zip(spellings, names):
            text = lead + case(animal)
            if any(t.animal == animal and t.sign > 0 and _nested(t.tokens, ids) for t in terms):
                raise ValueError(f"P({animal}): the tokens of {text!r} and another spelling begin one another, "
                                 f"so their probabilities would overlap; sublim.p_animal.CASES needs a look")
            terms.append(Term(animal, text, ids, +1))
            for banned in BANNED_SUBSTRINGS.get(animal, ()):
                (extended,) = _encode(tokenizer, [lead + case(banned)])
                if len(extended) > len(ids) and extended[:len(ids)] == ids:
                    terms.append(Term(animal, lead + case(banned), extended, -1))
    return terms


def answer_probabilities(backend, adapters: dict[int, str | None], n_questions: int,
                         animal_names: list[str]) -> tuple[list[dict], list[Term]]:
    """P(animal) for each epoch's student (epoch 0 with adapter None: the untuned base model), each of the
    first `n_questions` questions and each animal; every epoch goes to the engine at once. Returns the rows
    (epoch, question_index, animal, p_animal) and the terms that made them."""
    questions = EVAL_QUESTIONS[:n_questions]
    conversations = [question_messages(q) for q in questions]
    terms = animal_terms(backend.tokenizer, animal_names)
    for term in terms:
        log.info("P(%s) %s %r: tokens %s", term.animal, "+" if term.sign > 0 else "-", term.text, list(term.tokens))
    epochs = sorted(adapters)
    calls = [ScoreCall(conversations, [list(t.tokens) for t in terms], adapters[epoch]) for epoch in epochs]
    tables = backend.continuation_logprobs(calls, desc="P(animal)")
    signs = np.array([t.sign for t in terms], dtype=float)
    owner = np.array([t.animal for t in terms])
    rows = []
    for epoch, logprobs in zip(epochs, tables):
        weighted = np.exp(np.asarray(logprobs, dtype=float)) * signs  # questions × terms
        for animal in animal_names:
            # an excluded word is a sub-event of the name it extends: the difference is >= 0 up to rounding
            values = np.clip(weighted[:, owner == animal].sum(axis=1), 0.0, 1.0)
            rows += [{"epoch": epoch, "question_index": q, "animal": animal, "p_animal": float(v)}
                     for q, v in enumerate(values)]
    rows.sort(key=lambda r: (r["epoch"], r["question_index"], animal_names.index(r["animal"])))
    return rows, terms


def cell_table(rows: list[dict], size: str, condition: str, run: int) -> pd.DataFrame:
    """One cell's p_animal.csv."""
    table = pd.DataFrame.from_records(rows, columns=CELL_COLUMNS[3:])
    table.insert(0, "run", int(run))
    table.insert(0, "condition", condition)
    table.insert(0, "size", size)
    return table[CELL_COLUMNS]
