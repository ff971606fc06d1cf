"""Fused LoRA layers (sizing fused_lora) compute PEFT's function and gradients: to float64 rounding
without autocast, to bf16 rounding under bf16 autocast. A whole training with them (and shared
prefixes, activation checkpointing) is checked end to end in tests/test_shared_prefix.py."""

from __future__ import annotations

import torch
from peft import get_peft_model
from transformers import Qwen2Config, Qwen2ForCausalLM, set_seed

from sublim import fused_lora
from sublim.train import lora_config
from test_train_equivalence import TRAINING


def lora_model(dtype: torch.dtype):
    set_seed(0)
    config = Qwen2Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    model = get_peft_model(Qwen2ForCausalLM._from_config(config, dtype=dtype),
                           lora_config({**TRAINING["lora"], "alpha": 16}))  # scaling 2: the scale is exercised
    for module in model.modules():  # a trained-looking adapter, so lora_B's path is not all zeros
        if hasattr(module, "lora_B"):
            torch.nn.init.normal_(module.lora_B["default"].weight, std=0.05)
    return model


def step(model, input_ids, autocast: bool):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=input_ids, labels=input_ids).loss
    loss.backward()
    return loss.detach().float(), {k: v.grad.float().clone() for k, v in model.named_parameters() if v.grad is not None}


def relative_error(value, reference) -> float:
    return float((value - reference).abs().max() / reference.abs().max())


def test_fused_layers_compute_peft_loss_and_gradients():
    """float64, no autocast: the same numbers to rounding; and the check can fail (no LoRA scale)."""
    model = lora_model(torch.float64)
    input_ids = torch.randint(0, 256, (3, 24), generator=torch.Generator().manual_seed(0))
    loss, grads = step(model, input_ids, autocast=False)
    layers = fused_lora.fuse(model)
    assert len(layers) == 2 * 7
    fused_loss, fused_grads = step(model, input_ids, autocast=False)
    fused_lora.unfuse(layers)
    again_loss, _ = step(model, input_ids, autocast=False)

    assert abs(float(fused_loss / loss) - 1) < 1e-12
    assert grads.keys() == fused_grads.keys() and len(grads) == 2 * 7 * 2
    for name, grad in grads.items():
        assert relative_error(fused_grads[name], grad) < 1e-12, name
    assert torch.equal(again_loss, loss)  # PEFT's own forward again
    for layer in layers:
        layer.scaling["default"] = 0.0
    fused_lora.fuse(model)
    _, wrong_grads = step(model, input_ids, autocast=False)
    assert max(relative_error(wrong_grads[n], g) for n, g in grads.items()) > 0.5


def test_fused_layers_under_bf16_autocast_are_as_exact_as_peft():
    """bf16 autocast rounds both paths; against float64 arithmetic the fused layers' loss and
    gradients are no further off than PEFT's (the sum is rounded once, not per term)."""
    model = lora_model(torch.float32)
    input_ids = torch.randint(0, 256, (3, 24), generator=torch.Generator().manual_seed(0))
    exact_loss, exact_grads = step(lora_model(torch.float32).double(), input_ids, autocast=False)
    peft_loss, peft_grads = step(model, input_ids, autocast=True)
    layers = fused_lora.fuse(model)
    fused_loss, fused_grads = step(model, input_ids, autocast=True)
    fused_lora.unfuse(layers)

    assert abs(float(fused_loss - exact_loss)) <= 1.5 * abs(float(peft_loss - exact_loss)) + 1e-3
    for name, exact in exact_grads.items():
        peft_error = relative_error(peft_grads[name], exact.float())
        assert peft_error < 0.1, name  # bf16, not something else
        assert relative_error(fused_grads[name], exact.float()) <= 1.5 * peft_error + 1e-3, name


def test_layers_with_dropout_keep_peft_forward():
    set_seed(0)
    config = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2)
    model = get_peft_model(Qwen2ForCausalLM._from_config(config), lora_config({**TRAINING["lora"], "dropout": 0.1}))
    assert fused_lora.fuse(model) == []
