"""The generate stage: the teacher writes number sequences for one (size, condition, run) cell."""

from __future__ import annotations

import logging

from sublim.backends import Sampling
from sublim.chat import teacher_messages
from sublim.filtering import filter_completion
from sublim.prompts import make_rng, number_prompt
from sublim.seeds import derive_seed

log = logging.getLogger(__name__)


def generate_rows(backend, condition: str, generation: dict, filter_settings: dict,
                  prompt_seed: int, sample_seed: int) -> list[dict]:
    """Every teacher completion with its prompt. With `min_rows` set, further prompts (the same
    seeded generator, continued) are sampled until that many completions pass the filter."""
    sampling = Sampling.from_protocol(generation)
    target, cap = generation["n_prompts"], generation["max_prompts"]
    prompt_rng = make_rng(prompt_seed)  # one generator for all rounds: round k continues round k-1
    rows: list[dict] = []
    passing = 0
    while True:
        prompts = [number_prompt(prompt_rng) for _ in range(target - len(rows))]
        conversations = [teacher_messages(p, condition) for p in prompts]
        completions = backend.chat(conversations, sampling, seed=derive_seed(sample_seed, "generate", len(rows)),
                                   desc=f"teacher {condition}")
        for prompt, completion in zip(prompts, completions):
            rows.append({"index": len(rows), "prompt": prompt, "completion": completion})
            passing += filter_completion(completion, filter_settings["max_count"], filter_settings["max_value"]) is not None
        log.info("%d completions, %d pass the filter", len(rows), passing)
        if passing >= generation["min_rows"]:
            return rows
        if len(rows) >= cap:
            raise RuntimeError(
                f"only {passing} of {len(rows)} completions passed the filter, below "
                f"protocol.generation.min_rows={generation['min_rows']} at max_prompts={cap}; raise "
                f"max_prompts or max_tokens, or lower min_rows"
            )
        target = min(cap, len(rows) + generation["n_prompts"])

