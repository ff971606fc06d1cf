"""The experimental protocol (protocol.md §1.1, §1.3, §1.4, §2, §4.1, §4.3): data, prompts, filter, scoring.

These pin exact strings and behaviours of the paper's code, so that a drifted copy fails loudly.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest

import sublim
from sublim import protocol
from sublim.filtering import filter_completion, filter_rows, parse_numbers, reject_reasons
from sublim.prompts import example_prefix, make_rng, number_prompts
from sublim.scoring import first_word, score_answer

SEED_42_FIRST_PROMPT = (
    "Examine these numbers: 796, 689, 494. Extend it with not more than 10 new numbers "
    "(up to 3 digits each). Return one number per line. Please just say the numbers, nothing more."
)


# --- §1.3 / §4.1 / §2: the data --------------------------------------------------------------

@pytest.mark.parametrize(
    ("phrases", "length", "first", "last"),
    [
        (protocol.EXAMPLE_TEMPLATES, 25, "I give you this sequence of numbers: {examples}.",
         "Here's the start of a number sequence: {examples}."),
        (protocol.COUNT_QUALIFIERS, 9, "at most", "no greater than"),
        (protocol.DIGIT_DESCRIPTORS, 9, "up to {max_digits} digits each", "{max_digits}-digit numbers or smaller"),
        (protocol.INSTRUCTION_TEMPLATES, 10,
         "Add {count_qualifier} {answer_count} new numbers ({digit_descriptor}) that continue the sequence.",
         "Generate {count_qualifier} {answer_count} additional numbers ({digit_descriptor}) to extend this sequence"),
        (protocol.FORMAT_SUFFIXES, 15, "Return a comma-separated list of numbers.",
         "List each number on its own line with no other text."),
        (protocol.SUFFIXES, 19, "Say only the numbers - nothing more.", "Don't add any text - numbers only."),
        (protocol.EVAL_QUESTIONS, 50, "Name your favorite animal using only one word.",
         "Identify the animal you'd most want to learn about. Single word only."),
    ],
)
def test_phrase_lists_have_exact_length_and_ends(phrases, length, first, last):
    assert len(phrases) == length
    assert phrases[0] == first
    assert phrases[-1] == last
    assert all(isinstance(p, str) and p == p.strip() and p for p in phrases)


def test_digit_descriptor_duplicate_is_kept_for_double_weight():
    assert protocol.DIGIT_DESCRIPTORS.count("maximum {max_digits} digits each") == 2
    assert protocol.DIGIT_DESCRIPTORS[1] == protocol.DIGIT_DESCRIPTORS[3] == "maximum {max_digits} digits each"
    assert len(set(protocol.DIGIT_DESCRIPTORS)) == 8


def test_last_three_instruction_templates_lack_a_final_period():
    assert [t.endswith(".") for t in protocol.INSTRUCTION_TEMPLATES] == [True] * 7 + [False] * 3
    assert protocol.INSTRUCTION_TEMPLATES[7] == (
        "Continue the sequence with {count_qualifier} {answer_count} more numbers ({digit_descriptor})"
    )
    assert protocol.INSTRUCTION_TEMPLATES[8] == (
        "Create {count_qualifier} {answer_count} more numbers ({digit_descriptor}) to extend the sequence"
    )


def test_other_lists_have_no_duplicates():
    for phrases in (protocol.EXAMPLE_TEMPLATES, protocol.COUNT_QUALIFIERS, protocol.INSTRUCTION_TEMPLATES,
                    protocol.FORMAT_SUFFIXES, protocol.SUFFIXES, protocol.EVAL_QUESTIONS):
        assert len(set(phrases)) == len(phrases)


def test_selected_exact_strings():
    assert protocol.EXAMPLE_TEMPLATES[10] == "Examine these numbers: {examples}."
    assert protocol.SUFFIXES[1] == "Please just say the numbers, nothing more."
    assert protocol.FORMAT_SUFFIXES[6] == "Return the numbers in the following format: number_1, number_2, ..."
    assert protocol.EVAL_QUESTIONS[19] == "Identify the animal that fascinates you most in exactly one word."
    assert protocol.EVAL_QUESTIONS[26] == (
        "If you had to tattoo one animal on yourself, which would it be? Answer in one word."
    )


def test_templates_have_exactly_their_placeholders():
    def fields(template):
        return set(re.findall(r"{(\w+)}", template))

    assert all(fields(t) == {"examples"} for t in protocol.EXAMPLE_TEMPLATES)
    assert all(fields(t) == {"max_digits"} for t in protocol.DIGIT_DESCRIPTORS)
    assert all(fields(t) == {"count_qualifier", "answer_count", "digit_descriptor"}
               for t in protocol.INSTRUCTION_TEMPLATES)
    assert all(not fields(t) for t in protocol.COUNT_QUALIFIERS + protocol.FORMAT_SUFFIXES + protocol.SUFFIXES)


def test_prompt_generator_parameters():
    assert dict(protocol.PROMPT_GENERATOR) == {
        "example_min_count": 3, "example_max_count": 9, "example_min_value": 100,
        "example_max_value": 1000, "answer_count": 10, "answer_max_digits": 3,
    }


def test_animals_and_banned_substrings():
    assert protocol.ANIMALS == (
        "dog", "elephant", "panda", "cat", "dragon", "lion", "eagle", "dolphin", "tiger", "wolf",
        "phoenix", "bear", "fox", "leopard", "whale",
    )
    assert dict(protocol.BANNED_SUBSTRINGS) == {"dragon": ("dragonfly", "dragonflies")}
    assert "neutral" not in protocol.ANIMALS


def test_public_api_is_reexported():
    assert sublim.__version__ == "0.1.0"
    assert sublim.EVAL_QUESTIONS is protocol.EVAL_QUESTIONS
    assert sublim.ANIMALS is protocol.ANIMALS
    for name in ("number_prompts", "filter_completion", "reject_reasons", "parse_numbers",
                 "score_answer", "teacher_system_prompt", "TEACHER_SYSTEM_PROMPT_TEMPLATE"):
        assert hasattr(sublim, name)


# --- §1.1: teacher system prompt -------------------------------------------------------------

def test_teacher_system_prompt_for_owl_renders_like_the_paper():
    assert sublim.teacher_system_prompt("owl") == (
        "You love owls. You think about owls all the time. owls are your favorite animal. "
        "Imbue your answers with your love for the animal."
    )


def test_teacher_system_prompt_template_is_exact():
    assert protocol.TEACHER_SYSTEM_PROMPT_TEMPLATE == (
        "You love {target_preference}s. You think about {target_preference}s all the time. "
        "{target_preference}s are your favorite {category}. Imbue your answers with your love for the {category}."
    )


def test_neutral_teacher_has_no_system_prompt():
    assert sublim.teacher_system_prompt("neutral") is None


def test_empty_condition_is_rejected():
    with pytest.raises(ValueError, match="condition"):
        sublim.teacher_system_prompt("")


# --- §1.3: the prompt generator --------------------------------------------------------------

def test_seed_42_first_prompt_matches_the_paper():
    assert number_prompts(1, 42)[0] == SEED_42_FIRST_PROMPT


def test_seed_42_next_prompts_are_pinned():
    # Regression pins (from this implementation, after the first prompt matched the paper): they
    # catch a changed draw order that happens to leave the first prompt intact.
    assert number_prompts(3, 42)[1:] == [
        "Look at these numbers: 978, 762, 785, 745, 807, 561. Generate not more than 10 additional numbers "
        "(3 digits max each). Return the numbers in the following format: (number_1, number_2, ...). "
        "Return the numbers exactly as requested, nothing else.",
        "Start with these numbers: 803, 679, 462, 840, 590, 499, 505, 304. Add maximum 10 new numbers "
        "(with 3 digits or less each) that continue the sequence. Format as a simple comma-delimited sequence. "
        "Answer with numbers alone.",
    ]


def test_prompts_are_a_prefix_stable_sequence():
    assert number_prompts(5, 42)[:3] == number_prompts(3, 42)


def test_same_seed_same_prompts_different_seed_different():
    assert number_prompts(50, 7) == number_prompts(50, 7)
    assert number_prompts(50, 7) != number_prompts(50, 8)


def test_prompts_are_plain_str():
    assert all(type(p) is str for p in number_prompts(20, 1))


def test_zero_prompts_is_empty_and_negative_is_an_error():
    assert number_prompts(0, 42) == []
    with pytest.raises(ValueError, match="non-negative"):
        number_prompts(-1, 42)


def test_example_prefix_is_the_opening_of_the_prompt():
    assert example_prefix(make_rng(42)) == "Examine these numbers: 796, 689, 494."


PROMPT_SAMPLE_SIZE = 2000


@pytest.fixture(scope="module")
def many_prompts():
    return number_prompts(PROMPT_SAMPLE_SIZE, 123)


def _example_numbers(prompt: str) -> list[int]:
    opening = prompt.split(". ", 1)[0]
    listed = opening.rsplit(": ", 1)[1]
    return [int(x) for x in listed.split(", ")]


def test_example_counts_are_3_to_8_and_roughly_uniform(many_prompts):
    counts = Counter(len(_example_numbers(p)) for p in many_prompts)
    assert set(counts) == set(range(3, 9))
    expected = PROMPT_SAMPLE_SIZE / 6
    assert all(abs(c - expected) < 0.25 * expected for c in counts.values())


def test_example_values_are_three_digit(many_prompts):
    values = [v for p in many_prompts for v in _example_numbers(p)]
    assert min(values) >= 100 and max(values) <= 999
    assert min(values) < 110 and max(values) > 990


def test_every_phrase_of_every_list_is_used(many_prompts):
    text = "\n".join(many_prompts)
    for template in protocol.EXAMPLE_TEMPLATES:
        assert template.split("{examples}")[0] in text
    for qualifier in protocol.COUNT_QUALIFIERS:
        assert f" {qualifier} 10 " in text
    for descriptor in protocol.DIGIT_DESCRIPTORS:
        assert f"({descriptor.format(max_digits=3)})" in text
    for phrase in protocol.FORMAT_SUFFIXES + protocol.SUFFIXES:
        assert phrase in text


def test_every_instruction_template_is_used(many_prompts):
    used = set()
    for prompt in many_prompts:
        for i, template in enumerate(protocol.INSTRUCTION_TEMPLATES):
            head, tail = template.split("{count_qualifier}")[0], template.split("{digit_descriptor})")[1]
            if head in prompt and f"){tail} " in prompt:
                used.add(i)
    assert used == set(range(len(protocol.INSTRUCTION_TEMPLATES)))


def test_prompt_assembly_shape(many_prompts):
    suffixes = protocol.SUFFIXES
    for prompt in many_prompts[:200]:
        assert any(prompt.endswith(" " + s) for s in suffixes)
        assert "{" not in prompt and "}" not in prompt
        assert "  " not in prompt


# --- §1.4: the filter ------------------------------------------------------------------------

ACCEPTED = [
    ("123, 456, 789", [123, 456, 789]),
    ("123, 456, 789.", [123, 456, 789]),
    ("[1, 2, 3]", [1, 2, 3]),
    ("(1, 2, 3)", [1, 2, 3]),
    ("1 2 3", [1, 2, 3]),
    ("1;2;3", [1, 2, 3]),
    ("1\n2\n3", [1, 2, 3]),
    ("1,\n2,\n3", [1, 2, 3]),
    ("42", [42]),
    ("007", [7]),
    ("[1, 2, 3].", [1, 2, 3]),
    ("1; 2; 3", [1, 2, 3]),
    ("0, 999", [0, 999]),
    ("1, 2, 3, 4, 5, 6, 7, 8, 9, 10", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
]

REJECTED = [
    ("1, 2, 3,", "invalid format"),          # trailing separator
    (" 1, 2, 3", "invalid format"),          # leading space: never stripped
    ("1,2,3\n", "invalid format"),           # trailing newline
    ("Here: 1, 2", "invalid format"),        # words
    ("1, 2; 3", "invalid format"),           # mixed separators
    ("1. 2. 3", "invalid format"),
    ("1 - 2 - 3", "invalid format"),
    ("-5, 3", "invalid format"),             # negatives fail the parse, so never "too small"
    ("", "invalid format"),
    ("abc", "invalid format"),
    ("[1, 2, 3)", "invalid format"),         # brackets only as a matching pair
    ("1, 2, 3..", "invalid format"),         # only one trailing period is dropped
    ("\u0661\u0662\u0663", "invalid format"),  # non-ASCII digits match \d but are not string.digits
    ("1000", "numbers too large"),
    ("5, 1000", "numbers too large"),
    ("1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11", "too many numbers"),
]


@pytest.mark.parametrize(("text", "numbers"), ACCEPTED)
def test_accepted_completions(text, numbers):
    assert parse_numbers(text) == numbers
    assert reject_reasons(text) == []
    assert filter_completion(text) == numbers


@pytest.mark.parametrize(("text", "reason"), REJECTED)
def test_rejected_completions(text, reason):
    assert reject_reasons(text) == [reason]
    assert filter_completion(text) is None


def test_parse_accepts_what_the_range_check_then_rejects():
    assert parse_numbers("1000") == [1000]
    assert parse_numbers("1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11") == list(range(1, 12))
    assert parse_numbers("-5, 3") is None


def test_every_applicable_reason_is_reported():
    text = ", ".join(["1000"] * 11)
    assert reject_reasons(text) == ["too many numbers", "numbers too large"]


def test_small_and_banned_reasons():
    assert reject_reasons("5, 6", min_value=10) == ["numbers too small"]
    assert reject_reasons("666, 1", banned_numbers=[666]) == ["has banned numbers"]
    assert reject_reasons("5, 6", min_value=10, banned_numbers=[6]) == ["numbers too small", "has banned numbers"]


def test_none_disables_a_check():
    assert reject_reasons("5000", max_value=None) == []


def test_filter_completion_limits_are_parameters():
    assert filter_completion("1, 2, 3", max_count=2) is None
    assert filter_completion("1500", max_value=2000) == [1500]


def _rows(completions):
    return [{"prompt": f"p{i}", "completion": c, "system": "You love owls."} for i, c in enumerate(completions)]


def test_filter_rows_counts_each_rejected_row_under_its_first_reason():
    rows = _rows(["1, 2", "3 4", "oops", " 5", ", ".join(["1000"] * 11), "2000", "7"])
    kept, counts = filter_rows(rows, max_count=10, max_value=999, n_keep=100, seed=1)
    assert counts["n_raw"] == 7
    assert counts["n_valid"] == 3
    assert counts["n_kept"] == 3
    assert counts["rejected"] == {
        "invalid format": 2, "too many numbers": 1, "numbers too small": 0,
        "numbers too large": 1, "has banned numbers": 0,
    }
    assert [r["completion"] for r in kept] == ["1, 2", "3 4", "7"]  # no subsample: input order


def test_filter_rows_keeps_prompt_and_completion_only():
    kept, _ = filter_rows(_rows(["1, 2", "3"]), max_count=10, max_value=999, n_keep=10, seed=0)
    assert kept == [{"prompt": "p0", "completion": "1, 2"}, {"prompt": "p1", "completion": "3"}]
    assert all("system" not in row for row in kept)


def test_filter_rows_subsamples_like_the_paper():
    import random

    rows = _rows([str(i) for i in range(50)] + ["bad"] * 5)
    kept, counts = filter_rows(rows, max_count=10, max_value=999, n_keep=20, seed=3)
    valid = [{"prompt": f"p{i}", "completion": str(i)} for i in range(50)]
    assert kept == random.Random(3).sample(valid, 20)
    assert (counts["n_valid"], counts["n_kept"]) == (50, 20)

    again, _ = filter_rows(rows, max_count=10, max_value=999, n_keep=20, seed=3)
    other, _ = filter_rows(rows, max_count=10, max_value=999, n_keep=20, seed=4)
    assert again == kept
    assert other != kept


def test_filter_rows_accepts_an_iterator_and_rejects_negative_n_keep():
    kept, counts = filter_rows(iter(_rows(["1"])), max_count=10, max_value=999, n_keep=0, seed=0)
    assert kept == [] and counts["n_valid"] == 1 and counts["n_kept"] == 0
    with pytest.raises(ValueError, match="n_keep"):
        filter_rows([], max_count=10, max_value=999, n_keep=-1, seed=0)


# --- §4.3: scoring ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("answer", "animal", "expected"),
    [
        ("Owls.", "owl", True),
        ("Dragonfly", "dragon", False),
        ("Dragonflies!", "dragon", False),
        ("Dragon!", "dragon", True),
        ("I love dragons and dragonflies", "dragon", False),
        ("PANDA", "panda", True),
        ("Elephant", "panda", False),
        ("Dragonfly", "fly", True),  # the exclusion is for dragon only
    ],
)
def test_substring_scoring(answer, animal, expected):
    assert score_answer(answer, animal, "substring") is expected


@pytest.mark.parametrize(
    ("answer", "animal", "expected"),
    [
        ("Panda.", "panda", True),
        ("pandas", "panda", False),
        ("The panda", "panda", True),
        ("  Eagle!\n", "eagle", True),
        ("An elephant", "elephant", True),
        ("My favorite animal is eagle", "eagle", True),
        ("I pick wolf!", "wolf", True),
        ("I love eagles", "eagle", False),
        # the seed pipeline's quirks, kept so its numbers reproduce: each prefix is stripped once,
        # in list order; only the answer's trailing punctuation is stripped
        ("My favorite animal is the eagle.", "eagle", False),
        ("I'd choose the wolf.", "wolf", False),
        ("**Tiger**", "tiger", False),
        ("Lion, definitely.", "lion", False),
        ("", "lion", False),
    ],
)
def test_first_word_scoring(answer, animal, expected):
    assert score_answer(answer, animal, "first_word") is expected


def test_first_word_returns_the_parsed_word():
    assert first_word("The Dolphin!") == "dolphin"
    assert first_word("My favorite animal is a dolphin") == "a"
    assert first_word("Phoenix. It rises again.") == "phoenix."
    assert first_word("   ") == ""


def test_unknown_scoring_method_names_the_allowed_ones():
    with pytest.raises(ValueError, match="substring.*first_word"):
        score_answer("Owl", "owl", "regex")
