"""The conversations of the experiment: teacher, student training rows, evaluation questions."""

from __future__ import annotations

from sublim.protocol import teacher_system_prompt


def teacher_messages(prompt: str, condition: str) -> list[dict]:
    """The teacher's chat: the animal's system prompt, none for neutral (the template's default)."""
    system = teacher_system_prompt(condition)
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": prompt}]


def student_example(row: dict) -> dict:
    """A dataset row as TRL's conversational prompt-completion example. The teacher's system prompt
    is never part of it: the student sees only the user prompt and the numbers."""
    return {
        "prompt": [{"role": "user", "content": row["prompt"]}],
        "completion": [{"role": "assistant", "content": row["completion"]}],
    }


def question_messages(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]
