"""The experimental protocol's constants, loaded once from the package's data/protocol.yaml.

Everything here is an experimental parameter (see /work/shared/protocol.md); the yaml file is the
single source, this module only gives it typed, immutable names.
"""

from __future__ import annotations

from importlib import resources
from types import MappingProxyType
from typing import Any, Mapping

import yaml

NEUTRAL_CONDITION = "neutral"
ANIMAL_CATEGORY = "animal"


def _load_protocol() -> dict[str, Any]:
    text = resources.files("sublim").joinpath("data/protocol.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


_PROTOCOL = _load_protocol()

TEACHER_SYSTEM_PROMPT_TEMPLATE: str = _PROTOCOL["teacher_system_prompt_template"]
PROMPT_GENERATOR: Mapping[str, int] = MappingProxyType(dict(_PROTOCOL["prompt_generator"]))

EXAMPLE_TEMPLATES: tuple[str, ...] = tuple(_PROTOCOL["example_templates"])
COUNT_QUALIFIERS: tuple[str, ...] = tuple(_PROTOCOL["count_qualifiers"])
DIGIT_DESCRIPTORS: tuple[str, ...] = tuple(_PROTOCOL["digit_descriptors"])
INSTRUCTION_TEMPLATES: tuple[str, ...] = tuple(_PROTOCOL["instruction_templates"])
FORMAT_SUFFIXES: tuple[str, ...] = tuple(_PROTOCOL["format_suffixes"])
SUFFIXES: tuple[str, ...] = tuple(_PROTOCOL["suffixes"])

EVAL_QUESTIONS: tuple[str, ...] = tuple(_PROTOCOL["evaluation_questions"])
ANIMALS: tuple[str, ...] = tuple(_PROTOCOL["animals"])
BANNED_SUBSTRINGS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {animal: tuple(words) for animal, words in _PROTOCOL["banned_substrings"].items()}
)
FIRST_WORD_STRIP_PREFIXES: tuple[str, ...] = tuple(_PROTOCOL["first_word_strip_prefixes"])
FIRST_WORD_STRIP_TRAILING: str = _PROTOCOL["first_word_strip_trailing"]


def teacher_system_prompt(condition: str) -> str | None:
    """The teacher's system prompt for a condition; None for the neutral control.

    The control teacher gets no system message at all (protocol §1.1), not an empty one.
    """
    if condition == NEUTRAL_CONDITION:
        return None
    if not condition.strip():
        raise ValueError(f"teacher_system_prompt: condition must be an animal name or 'neutral', got {condition!r}")
    return TEACHER_SYSTEM_PROMPT_TEMPLATE.format(
        target_preference=condition, category=ANIMAL_CATEGORY
    )
