"""sublim: the subliminal-learning experiment as a library (the workflow's rules call into it).

Import-light on purpose: nothing heavy (torch, transformers, vllm) is imported here.
"""

from sublim.filtering import filter_completion, parse_numbers, reject_reasons
from sublim.prompts import number_prompts
from sublim.protocol import ANIMALS, EVAL_QUESTIONS, TEACHER_SYSTEM_PROMPT_TEMPLATE, teacher_system_prompt
from sublim.scoring import score_answer

__version__ = "0.1.0"

__all__ = [
    "ANIMALS",
    "EVAL_QUESTIONS",
    "TEACHER_SYSTEM_PROMPT_TEMPLATE",
    "__version__",
    "filter_completion",
    "number_prompts",
    "parse_numbers",
    "reject_reasons",
    "score_answer",
    "teacher_system_prompt",
]
