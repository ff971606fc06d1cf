"""The `seed` preset trains as the seed pipeline did: unsloth's SFTConfig defaults (8-bit AdamW, weight
decay 0.01, data order seeded with 3407 in every run; config/README.md "Presets" has the source lines),
and what happens to 8-bit AdamW on a machine without CUDA."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from sublim import train
from sublim.config import load_presets, sizing_defaults
from sublim.train import build_trainer, data_seed, load_student_dataset, optimizer_name

ROWS = [{"prompt": "Take these numbers: 100, 200. Say only the numbers - nothing more.", "completion": "300, 400"}] * 2


def test_presets_carry_each_recipes_optimizer_settings():
    presets = load_presets()
    seed, paper = presets["seed"]["training"], presets["paper"]["training"]
    assert (seed["optimizer"], seed["weight_decay"], seed["data_seed"]) == ("adamw_8bit", 0.01, 3407)
    assert (paper["optimizer"], paper["weight_decay"], paper["data_seed"]) == ("adamw_torch", 0.0, "run")
    # what unsloth did not change in the seed: the seed passed these explicitly
    assert (seed["learning_rate"], seed["lr_scheduler"], seed["warmup_steps"]) == (2.0e-4, "linear", 5)
    assert (seed["max_grad_norm"], seed["max_length"]) == (1.0, 500)


def test_data_order_seed_is_the_runs_or_the_presets_fixed_value():
    assert data_seed({"data_seed": "run"}, 7) == 7
    assert data_seed({"data_seed": 3407}, 7) == 3407


def test_eight_bit_adamw_without_cuda_falls_back_to_32_bit_adamw_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="sublim.train"):
        assert optimizer_name({"optimizer": "adamw_8bit"}, {"fused_optimizer": True}) == "adamw_torch"
    assert "protocol.training.optimizer adamw_8bit needs bitsandbytes on CUDA" in caplog.text
    assert optimizer_name({"optimizer": "adamw_torch"}, {"fused_optimizer": True}) == "adamw_torch"


def test_eight_bit_adamw_on_cuda_needs_bitsandbytes(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(train.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"protocol.training.optimizer 'adamw_8bit' needs bitsandbytes.*\[gpu\]"):
        optimizer_name({"optimizer": "adamw_8bit"}, {})
    monkeypatch.setattr(train.importlib.util, "find_spec", lambda name: object())
    assert optimizer_name({"optimizer": "adamw_8bit"}, {"fused_optimizer": True}) == "adamw_8bit"
    assert optimizer_name({"optimizer": "adamw_torch"}, {"fused_optimizer": True}) == "adamw_torch_fused"


def test_seed_preset_trainer_on_cpu(tmp_path, tiny_qwen_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dataset = tmp_path / "dataset.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    training = {**load_presets()["seed"]["training"], "epochs": 1, "effective_batch": 2}
    trainer = build_trainer(AutoModelForCausalLM.from_pretrained(tiny_qwen_dir, dtype=torch.float32),
                            AutoTokenizer.from_pretrained(tiny_qwen_dir), load_student_dataset(dataset), training,
                            sizing_defaults(), seed=2, checkpoint_dir=tmp_path / "ckpt")
    assert trainer.args.optim.value == "adamw_torch"  # no CUDA here: the logged fallback
    assert (trainer.args.weight_decay, trainer.args.data_seed, trainer.args.seed) == (0.01, 3407, 2)
    assert (trainer.args.warmup_steps, trainer.args.max_length) == (5, 500)
