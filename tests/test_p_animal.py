"""P(animal) (sublim.p_animal): which spellings count, the transformers backend's logprobs against a plain
forward pass (base model and a LoRA adapter), and the report's tables and plot on P(animal). The vLLM
backend's agreement on the demo model is in tests/test_vllm_backend.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import qwen_tokenizer, save_tiny_qwen
from sublim.backends import ScoreCall, open_backend
from sublim.backends.vllm_backend import prompt_token_ids, scoring_kwargs
from sublim.chat import question_messages
from sublim.config import sizing_for
from sublim.p_animal import CELL_COLUMNS, animal_terms, answer_probabilities, candidates, cell_table, name_variants
from sublim.plots import plot_p_animal
from sublim.protocol import ANIMALS, EVAL_QUESTIONS
from sublim.report import p_animal_tables

CONVERSATIONS = [question_messages(q) for q in EVAL_QUESTIONS[:3]]


def test_spellings_are_three_cases_with_and_without_a_leading_space():
    assert name_variants("owl") == ["Owl", "owl", "OWL", " Owl", " owl", " OWL"]
    assert candidates(["neutral", "owl", "cat"]) == [*ANIMALS, "owl"]  # the protocol's 15, then the grid's others
    assert candidates(["neutral", *ANIMALS[:3]]) == list(ANIMALS)


def test_excluded_words_are_subtracted_where_their_tokens_extend_the_name():
    tokenizer = qwen_tokenizer()
    terms = animal_terms(tokenizer, ["dragon", "owl"])
    owl = [t for t in terms if t.animal == "owl"]
    assert [t.text for t in owl] == name_variants("owl") and all(t.sign == 1 for t in owl)
    for term in terms:
        assert list(term.tokens) == tokenizer(term.text, add_special_tokens=False)["input_ids"]
    names = {t.text: t.tokens for t in terms if t.animal == "dragon" and t.sign == 1}
    excluded = [t for t in terms if t.sign == -1]
    assert excluded and all(t.animal == "dragon" and "fl" in t.text.lower() for t in excluded)
    for term in excluded:
        name = names[term.text[:len(term.text) - len(term.text.lstrip()) + len("dragon")]]
        assert term.tokens[:len(name)] == name and len(term.tokens) > len(name)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny Qwen2 (the real Qwen2.5 tokenizer and template) and a LoRA adapter whose weights
    are not zero, so it changes every logprob."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("tiny")
    model_dir = save_tiny_qwen(root / "model")
    torch.manual_seed(1)
    student = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                             LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                        init_lora_weights=False))
    student.save_pretrained(root / "adapter")
    return model_dir, str(root / "adapter")


def direct_logprob(model, prompt: list[int], continuation: list[int]) -> float:
    """One sequence, no padding, no cache: the reference value."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + continuation])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(float(logprobs[len(prompt) - 1 + k, token]) for k, token in enumerate(continuation))


def test_transformers_scores_equal_a_plain_forward_pass_for_base_and_adapter(tiny):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model_dir, adapter = tiny
    # batch size 2 with continuations of 1, 2 and 3 tokens: several batches, ragged ones among them
    backend = open_backend("transformers", str(model_dir), {**sizing_for({}, "1m"), "generate_batch_size": 2},
                           {"student": adapter}, stage="evaluate")
    continuations = [[9], [100, 200], [300, 400, 500], [17, 18]]
    base, student = backend.continuation_logprobs([ScoreCall(CONVERSATIONS, continuations),
                                                   ScoreCall(CONVERSATIONS, continuations, "student")])
    backend.close()
    assert base.shape == student.shape == (len(CONVERSATIONS), len(continuations))
    prompts = prompt_token_ids(qwen_tokenizer(), CONVERSATIONS)
    plain = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    expected = np.array([[direct_logprob(plain, p, c) for c in continuations] for p in prompts])
    assert np.allclose(base, expected, atol=1e-5)
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapter).eval()
    expected = np.array([[direct_logprob(peft, p, c) for c in continuations] for p in prompts])
    assert np.allclose(student, expected, atol=1e-5)
    assert not np.allclose(base, student, atol=1e-3)  # the adapter was applied


def test_p_animal_is_the_sum_over_spellings_less_the_excluded_words(tiny):
    model_dir, adapter = tiny
    backend = open_backend("transformers", str(model_dir), sizing_for({}, "1m"), {"epoch-1": adapter},
                           stage="evaluate")
    rows, terms = answer_probabilities(backend, {0: None, 1: "epoch-1"}, 2, ["dragon", "owl"])
    tables = backend.continuation_logprobs([ScoreCall(CONVERSATIONS[:2], [list(t.tokens) for t in terms])])
    backend.close()
    table = cell_table(rows, "1m", "owl", 1)
    assert list(table.columns) == CELL_COLUMNS and len(table) == 2 * 2 * 2  # epochs × questions × animals
    assert table["p_animal"].between(0, 1).all()
    base = table[table["epoch"] == 0].set_index(["question_index", "animal"])["p_animal"]
    signs = np.array([t.sign for t in terms])
    for animal in ("dragon", "owl"):
        mine = np.array([t.animal == animal for t in terms])
        expected = (np.exp(tables[0][:, mine]) * signs[mine]).sum(axis=1)
        assert np.allclose(base.xs(animal, level="animal").to_numpy(), expected, rtol=1e-6)
    assert not np.allclose(table[table["epoch"] == 1]["p_animal"], table[table["epoch"] == 0]["p_animal"])


def test_a_vllm_scoring_request_forces_the_token_it_scores():
    kwargs = scoring_kwargs(1234)
    assert kwargs["allowed_token_ids"] == [1234] and kwargs["logprobs"] == 0 and kwargs["max_tokens"] == 1
    assert kwargs["temperature"] == 0.0 and "prompt_logprobs" not in kwargs


# --- the report on P(animal) ---------------------------------------------------------------------

def write_p_animal(root, size, condition, run, epochs, animals, level, rng, questions=10):
    path = root / size / condition / f"run-{run}" / "p_animal.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"epoch": e, "question_index": q, "animal": a,
             "p_animal": float(np.clip(level(a, e) + rng.normal(0, 0.02), 0, 1))}
            for e in epochs for q in range(questions) for a in animals]
    cell_table(rows, size, condition, run).to_csv(path, index=False)
    return path


def sampled_tables(sizes, animals, epochs):
    """The sampled rate's transmission.csv / scaling.csv columns the P(animal) tables take (values made up)."""
    per_animal = pd.DataFrame([{"size": s, "animal": a, "epoch": e} for s in sizes for a in animals for e in epochs])
    per_size = pd.DataFrame([{"size": s, "epoch": e} for s in sizes for e in epochs])
    for table in (per_animal, per_size):
        for column in ("animal_student_rate", "neutral_student_rate", "base_rate", "animal_minus_neutral",
                       "animal_minus_neutral_lo", "animal_minus_neutral_hi", "animal_minus_neutral_p"):
            table[column] = 0.25
    return per_animal, per_size


def test_p_animal_tables_find_a_planted_effect_beside_the_sampled_rate(tmp_path):
    rng = np.random.default_rng(0)
    conditions, animals, sizes, epochs = ["neutral", "owl", "cat"], ["owl", "cat"], ["0.5b", "7b"], [1, 2]
    cells = []
    for size in sizes:
        for condition in conditions:
            for run in (1, 2, 3):
                # the animal's own student: +0.3 on its animal; the files hold every candidate animal
                level = (lambda a, e, c=condition: 0.1 + (0.3 if a == c else 0.0))
                cells.append(({"size": size, "condition": condition, "run": run},
                              write_p_animal(tmp_path, size, condition, run, epochs, ["dog", *animals], level, rng)))
        cells.append(({"size": size, "condition": "base", "run": 0},
                      write_p_animal(tmp_path, size, "base", 0, [0], ["dog", *animals], lambda a, e: 0.1, rng)))
    per_animal, per_size = p_animal_tables(cells, *sampled_tables(sizes, animals, epochs), sizes=sizes,
                                           conditions=conditions, params_b={"0.5b": 0.49, "7b": 7.62})
    assert len(per_animal) == len(sizes) * len(animals) * len(epochs) and len(per_size) == len(sizes) * len(epochs)
    assert set(per_animal["animal"]) == set(animals)  # the grid's animals only
    found = per_animal["p_animal_minus_neutral"]
    assert ((found - 0.3).abs() < 0.03).all()
    assert (per_animal["p_animal_minus_neutral_lo"] < found).all()
    assert (found < per_animal["p_animal_minus_neutral_hi"]).all()
    assert (per_animal["p_animal_minus_neutral_p"] < 0.01).all()
    assert per_animal["p_animal_minus_neutral_q"].notna().all()
    assert (per_animal["p_animal_minus_neutral_method"] == "runs").all()
    assert per_animal["base_p_animal"].notna().all() and (per_animal["sampled_animal_student_rate"] == 0.25).all()
    assert list(per_animal.columns)[-1] == "note" and not any(c.startswith("seed_") for c in per_animal.columns)
    assert (per_size["p_animal_minus_neutral"].round(1) == 0.3).all()
    out = tmp_path / "p_animal.png"
    plot_p_animal(per_animal, per_size, out)
    from matplotlib.image import imread
    assert imread(out).shape[:2] == (1200, 2100)


def test_a_cell_without_a_grid_animal_is_named(tmp_path):
    rng = np.random.default_rng(0)
    path = write_p_animal(tmp_path, "0.5b", "owl", 1, [1], ["owl"], lambda a, e: 0.1, rng)
    with pytest.raises(ValueError, match=r"0.5b/owl/run-1: p_animal.csv has no cat; rerun"):
        p_animal_tables([({"size": "0.5b", "condition": "owl", "run": 1}, path)],
                        *sampled_tables(["0.5b"], ["owl", "cat"], [1]), sizes=["0.5b"],
                        conditions=["owl", "cat"], params_b={"0.5b": 0.49})
