"""Scoring an evaluation answer for a target animal (protocol §4.3).

"substring" is the paper's metric (case-insensitive substring, "dragonfly" excluded for dragon);
"first_word" is the seed pipeline's (jeqcho's) exact match on the answer's first word.
"""

from __future__ import annotations

from sublim.protocol import BANNED_SUBSTRINGS, FIRST_WORD_STRIP_PREFIXES, FIRST_WORD_STRIP_TRAILING

SCORING_METHODS = ("substring", "first_word")


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
