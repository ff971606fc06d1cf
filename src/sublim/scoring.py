"""Scoring an evaluation answer for a target animal (protocol §4.3).

"substring" is the paper's metric (case-insensitive substring, "dragonfly" excluded for dragon);
"first_word" is the seed pipeline's (jeqcho's) exact match on the answer's first word.
"""

from __future__ import annotations

import string

from sublim.protocol import BANNED_SUBSTRINGS, FIRST_WORD_STRIP_PREFIXES

SCORING_METHODS = ("substring", "first_word")


def mentions_animal(answer: str, animal: str) -> bool:
    lowered = answer.lower()
    if any(banned in lowered for banned in BANNED_SUBSTRINGS.get(animal, ())):
        return False
    return animal in lowered


def _strip_prefixes(text: str) -> str:
    # Repeatedly, so that stacked openings ("my favorite animal is the eagle") reduce to the animal.
    stripped = True
    while stripped:
        stripped = False
        for prefix in FIRST_WORD_STRIP_PREFIXES:
            if text.startswith(prefix):
                text = text[len(prefix) :].lstrip()
                stripped = True
    return text


def first_word(answer: str) -> str:
    """The answer's first word after lower-casing and dropping openings and punctuation ("" if none)."""
    text = _strip_prefixes(answer.lower().strip())
    words = text.split()
    if not words:
        return ""
    return words[0].strip(string.punctuation)


def score_answer(answer: str, animal: str, method: str) -> bool:
    """Whether the answer names the animal, under the given scoring method."""
    if method == "substring":
        return mentions_animal(answer, animal)
    if method == "first_word":
        return first_word(answer) == animal
    raise ValueError(f"unknown scoring method {method!r}; allowed: {', '.join(SCORING_METHODS)}")
