"""The teacher-completion filter: the paper's parse_response + get_reject_reasons, and the subsample.

Source: sl/datasets/nums_dataset.py and sl/finetuning/services.py (protocol §1.4, §1.5). The rules
are deliberately strict and reproduced as-is: the completion is never stripped, so any leading or
trailing whitespace, a trailing separator or a mix of separators rejects it.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Iterable, Sequence

INVALID_FORMAT = "invalid format"
TOO_MANY_NUMBERS = "too many numbers"
NUMBERS_TOO_SMALL = "numbers too small"
NUMBERS_TOO_LARGE = "numbers too large"
HAS_BANNED_NUMBERS = "has banned numbers"
REJECT_REASONS = (INVALID_FORMAT, TOO_MANY_NUMBERS, NUMBERS_TOO_SMALL, NUMBERS_TOO_LARGE, HAS_BANNED_NUMBERS)

ALLOWED_SEPARATORS = ("", ",", ";")  # after .strip(), so "" covers any pure whitespace incl. newlines
_DIGIT_RUN = re.compile(r"\d+")


def _unwrap(text: str) -> str:
    if text.endswith("."):
        text = text[:-1]
    if (text.startswith("[") and text.endswith("]")) or (text.startswith("(") and text.endswith(")")):
        text = text[1:-1]
    return text


def _is_ascii_digits(part: str) -> bool:
    # The original checks against string.digits, not str.isdigit: r"\d" also matches non-ASCII
    # digits, which must still be rejected.
    return all(c in string.digits for c in part)


def parse_numbers(text: str) -> list[int] | None:
    """The integers of a well-formed number list, or None (exactly the paper's parse_response)."""
    body = _unwrap(text)
    runs = list(_DIGIT_RUN.finditer(body))
    if not runs:
        return None
    if len(runs) == 1:
        if body != runs[0].group():
            return None
        parts = [body]
    else:
        separator = body[runs[0].end() : runs[1].start()]
        if separator.strip() not in ALLOWED_SEPARATORS:
            return None
        parts = body.split(separator)
    if not all(_is_ascii_digits(part) for part in parts):
        return None
    if any(part == "" for part in parts):  # the original's int("") failure: a trailing separator
        return None
    return [int(part) for part in parts]


def reject_reasons(
    text: str,
    max_count: int | None = 10,
    min_value: int | None = 0,
    max_value: int | None = 999,
    banned_numbers: Sequence[int] | None = (),
) -> list[str]:
    """Every reason to reject a completion (empty list: accept). None disables a check."""
    numbers = parse_numbers(text)
    if numbers is None:
        return [INVALID_FORMAT]
    reasons = []
    if max_count is not None and len(numbers) > max_count:
        reasons.append(TOO_MANY_NUMBERS)
    if min_value is not None and any(n < min_value for n in numbers):
        reasons.append(NUMBERS_TOO_SMALL)
    if max_value is not None and any(n > max_value for n in numbers):
        reasons.append(NUMBERS_TOO_LARGE)
    if banned_numbers and any(n in banned_numbers for n in numbers):
        reasons.append(HAS_BANNED_NUMBERS)
    return reasons


def filter_completion(text: str, max_count: int = 10, max_value: int = 999) -> list[int] | None:
    """The completion's numbers if it passes the paper's filter (min 0, no banned numbers), else None."""
    if reject_reasons(text, max_count=max_count, max_value=max_value):
        return None
    return parse_numbers(text)


def filter_rows(
    rows: Iterable[dict],
    *,
    max_count: int,
    max_value: int,
    n_keep: int,
    seed: int,
) -> tuple[list[dict], dict]:
    """Keep the rows whose completion passes, then subsample n_keep of them like the paper.

    Returns (kept rows as {"prompt", "completion"}, counts). The counts record each rejected row
    under its first reason. Kept rows never carry the teacher's system prompt.
    """
    if n_keep < 0:
        raise ValueError(f"filter_rows: n_keep must be >= 0, got {n_keep}")
    valid, rejected, n_raw = _sort_rows(rows, max_count, max_value)
    kept = subsample(valid, n_keep, seed)
    counts = {"n_raw": n_raw, "n_valid": len(valid), "n_kept": len(kept), "rejected": rejected}
    return kept, counts


def passing_rows(rows: Iterable[dict], *, max_count: int, max_value: int) -> list[dict]:
    """Every row whose completion passes, in order, as {"prompt", "completion"}: the seed pipeline's
    filtered.jsonl, before the subsample."""
    return _sort_rows(rows, max_count, max_value)[0]


def _sort_rows(rows: Iterable[dict], max_count: int, max_value: int) -> tuple[list[dict], dict, int]:
    """(passing rows, rejected rows per first reason, rows seen)."""
    rejected = dict.fromkeys(REJECT_REASONS, 0)
    valid = []
    n_raw = 0
    for row in rows:
        n_raw += 1
        reasons = reject_reasons(row["completion"], max_count=max_count, max_value=max_value)
        if reasons:
            rejected[reasons[0]] += 1
        else:
            valid.append({"prompt": row["prompt"], "completion": row["completion"]})
    return valid, rejected, n_raw


def subsample(rows: list[dict], n_keep: int, seed: int) -> list[dict]:
    """sl/finetuning/services.py::run_finetuning_job: sample only when there are too many rows."""
    if len(rows) > n_keep:
        return random.Random(seed).sample(rows, n_keep)
    return rows
