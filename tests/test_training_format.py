"""The student's training rows: chat formatting (no teacher system prompt) and loss masking."""

from __future__ import annotations

import json

import pytest
import torch

from sublim.chat import student_example, teacher_messages
from sublim.config import load_presets, sizing_for
from sublim.train import build_trainer, load_student_dataset

ROWS = [
    {"prompt": "Examine these numbers: 796, 689, 494. Return one number per line.", "completion": "512\n733\n104"},
    {"prompt": "Take these numbers: 100, 200. Say only the numbers - nothing more.", "completion": "300, 400, 500"},
]


def training(loss: str) -> dict:
    return {**load_presets()["paper"]["training"], "epochs": 1, "effective_batch": 2, "loss": loss}


def make_trainer(tmp_path, model_dir, loss):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dataset_path = tmp_path / "dataset.jsonl"
    dataset_path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return build_trainer(model, tokenizer, load_student_dataset(dataset_path), training(loss),
                         sizing_for({}, "1m"), seed=1, checkpoint_dir=tmp_path / "ckpt"), tokenizer


def test_teacher_chat_has_the_animal_system_prompt_and_neutral_has_none():
    owl = teacher_messages("1, 2, 3", "owl")
    assert owl[0] == {"role": "system", "content": "You love owls. You think about owls all the time. "
                      "owls are your favorite animal. Imbue your answers with your love for the animal."}
    assert teacher_messages("1, 2, 3", "neutral") == [{"role": "user", "content": "1, 2, 3"}]


def test_student_example_is_user_prompt_and_teacher_numbers_only():
    example = student_example({"prompt": "P", "completion": "1, 2"})
    assert example == {"prompt": [{"role": "user", "content": "P"}],
                       "completion": [{"role": "assistant", "content": "1, 2"}]}
    assert "system" not in json.dumps(example)


def test_rendered_training_text_uses_the_templates_default_system_prompt(tmp_path, tiny_qwen_dir):
    trainer, tokenizer = make_trainer(tmp_path, tiny_qwen_dir, "completion_only")
    text = tokenizer.decode(trainer.train_dataset[0]["input_ids"])
    assert text.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
    assert "You love" not in text
    assert text.endswith(f"<|im_start|>assistant\n{ROWS[0]['completion']}<|im_end|>\n")


def masked_label_text(trainer, tokenizer) -> list[str]:
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(ROWS))])
    texts = []
    for ids, labels in zip(batch["input_ids"], batch["labels"]):
        texts.append(tokenizer.decode(ids[labels != -100]))
    return texts


def test_completion_only_loss_covers_exactly_the_numbers_and_end_of_turn(tmp_path, tiny_qwen_dir):
    trainer, tokenizer = make_trainer(tmp_path, tiny_qwen_dir, "completion_only")
    assert masked_label_text(trainer, tokenizer) == [r["completion"] + "<|im_end|>\n" for r in ROWS]


def test_full_text_loss_covers_the_whole_chat(tmp_path, tiny_qwen_dir):
    trainer, tokenizer = make_trainer(tmp_path, tiny_qwen_dir, "full_text")
    for text, row in zip(masked_label_text(trainer, tokenizer), ROWS):
        assert text.startswith("<|im_start|>system\nYou are Qwen")
        assert row["prompt"] in text and text.endswith(row["completion"] + "<|im_end|>\n")


def test_an_empty_dataset_names_the_file_and_the_fix(tmp_path):
    empty = tmp_path / "dataset.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"dataset.jsonl has no rows.*filter.json"):
        load_student_dataset(empty)
