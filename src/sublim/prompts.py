"""User prompts for the teacher: the paper's PromptGenerator (sl/datasets/nums_dataset.py).

One numpy Generator drives everything, prompts are drawn sequentially, and the draw order per prompt
is fixed (protocol §1.3), so a seed reproduces the paper's prompt list exactly.
"""

from __future__ import annotations

import numpy as np

from sublim.protocol import (
    COUNT_QUALIFIERS,
    DIGIT_DESCRIPTORS,
    EXAMPLE_TEMPLATES,
    FORMAT_SUFFIXES,
    INSTRUCTION_TEMPLATES,
    PROMPT_GENERATOR,
    SUFFIXES,
)


def make_rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def example_prefix(rng: np.random.Generator) -> str:
    """The "Look at these numbers: 123, 456." opening; also used alone by the numbers-prefix eval."""
    example_count = rng.integers(
        PROMPT_GENERATOR["example_min_count"], PROMPT_GENERATOR["example_max_count"]
    ).item()
    examples = [
        str(rng.integers(PROMPT_GENERATOR["example_min_value"], PROMPT_GENERATOR["example_max_value"]).item())
        for _ in range(example_count)
    ]
    template = rng.choice(EXAMPLE_TEMPLATES)
    return template.format(examples=", ".join(examples))


def number_prompt(rng: np.random.Generator) -> str:
    """One prompt (PromptGenerator.sample_query); the draws below must stay in this order."""
    example_part = example_prefix(rng)
    count_qualifier = rng.choice(COUNT_QUALIFIERS)
    digit_descriptor_template = rng.choice(DIGIT_DESCRIPTORS)
    instruction_template = rng.choice(INSTRUCTION_TEMPLATES)
    format_suffix = rng.choice(FORMAT_SUFFIXES)
    suffix = rng.choice(SUFFIXES)

    digit_descriptor = digit_descriptor_template.format(max_digits=PROMPT_GENERATOR["answer_max_digits"])
    instruction = instruction_template.format(
        count_qualifier=count_qualifier,
        answer_count=PROMPT_GENERATOR["answer_count"],
        digit_descriptor=digit_descriptor,
    )
    return f"{example_part} {instruction} {format_suffix} {suffix}"


def number_prompts(n: int, seed: int) -> list[str]:
    """The first n prompts of the generator seeded with seed (the paper's sl cfgs use seed 42)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"number_prompts: n must be a non-negative integer, got {n!r}")
    rng = make_rng(seed)
    return [str(number_prompt(rng)) for _ in range(n)]
