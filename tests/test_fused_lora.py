"""Fused LoRA layers (sizing fused_lora) compute PEFT's function and gradients: to float64 rounding
without autocast, to bf16 rounding under bf16 autocast. A whole training with them (and shared
prefixes, activation checkpointing) is checked end to end in tests/test_shared_prefix.py."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model
from transformers import Qwen2Config, Qwen2ForCausalLM, set_seed

from sublim import fused_lora
from sublim.train import lora_config
from test_train_equivalence import TRAINING


def lora_model(dtype: torch.dtype, alpha: float = 16):
    set_seed(0)
    config = Qwen2Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    # alpha 16 against r 8: scaling 2, so the scale is exercised; the presets' alpha 8: scaling 1
    model = get_peft_model(Qwen2ForCausalLM._from_config(config, dtype=dtype),
                           lora_config({**TRAINING["lora"], "alpha": alpha}))
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


@pytest.mark.parametrize("alpha", [16, 8])
def test_fused_layers_compute_peft_loss_and_gradients(alpha):
    """float64, no autocast: the same numbers to rounding; and the check can fail (no LoRA scale)."""
    model = lora_model(torch.float64, alpha)
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


def test_adapter_casts_last_until_forgotten():
    """Under bf16 autocast each layer casts its adapter once and reuses the cast; after the weights
    change, a forgotten cast is made again (PEFT's loss), a kept one is stale (the check can fail)."""
    model = lora_model(torch.float32)
    input_ids = torch.randint(0, 256, (3, 24), generator=torch.Generator().manual_seed(0))
    layers = fused_lora.fuse(model)
    step(model, input_ids, autocast=True)
    casts = {id(layer): layer.adapter_casts[torch.bfloat16] for layer in layers}
    assert all(a.dtype == b.dtype == torch.bfloat16 for a, b in casts.values())
    step(model, input_ids, autocast=True)
    assert all(layer.adapter_casts[torch.bfloat16] is casts[id(layer)] for layer in layers)

    with torch.no_grad():  # an update, as an optimizer step makes in place
        for layer in layers:
            layer.lora_B["default"].weight.mul_(3)
    stale_loss, _ = step(model, input_ids, autocast=True)
    fused_lora.forget_casts(layers)
    fused_loss, _ = step(model, input_ids, autocast=True)
    fused_lora.unfuse(layers)
    peft_loss, _ = step(model, input_ids, autocast=True)
    assert abs(float(fused_loss - peft_loss)) < 0.02 * abs(float(stale_loss - peft_loss))


def test_the_training_callback_forgets_casts_at_each_step():
    model = lora_model(torch.float32)
    callback = fused_lora.FusedLoraLayers()
    callback.on_train_begin(None, None, None, model=model)
    step(model, torch.randint(0, 256, (2, 8), generator=torch.Generator().manual_seed(0)), autocast=True)
    layers = callback._layers
    assert all(layer.adapter_casts for layer in layers)
    callback.on_optimizer_step(None, None, None)
    assert not any(layer.adapter_casts for layer in layers)
    step(model, torch.randint(0, 256, (2, 8), generator=torch.Generator().manual_seed(1)), autocast=True)
    callback.on_step_begin(None, None, None)
    assert not any(layer.adapter_casts for layer in layers)
    callback.on_train_end(None, None, None)
    assert not any(hasattr(layer, "adapter_casts") for layer in layers)


def micro_batches(model, batches, autocast: bool):
    """One optimizer step's gradients over several micro-batches (no zeroing between them), and the
    adapter's gradient tensors after each micro-batch."""
    model.zero_grad()
    seen = []
    for input_ids in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            model(input_ids=input_ids, labels=input_ids).loss.backward()
        seen.append({k: v.grad for k, v in model.named_parameters() if v.grad is not None})
    return {k: v.clone() for k, v in seen[-1].items()}, seen


@pytest.mark.parametrize("alpha", [16, 8])
def test_later_micro_batches_add_into_the_gradient_in_place(alpha):
    """Two micro-batches: the fused layers' sum is PEFT's (float64), the second one added in place."""
    model = lora_model(torch.float64, alpha)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 256, (3, 24), generator=generator) for _ in range(2)]
    peft_grads, _ = micro_batches(model, batches, autocast=False)
    layers = fused_lora.fuse(model)
    fused_grads, seen = micro_batches(model, batches, autocast=False)
    fused_lora.unfuse(layers)

    assert peft_grads.keys() == fused_grads.keys() and len(peft_grads) == 2 * 7 * 2
    for name, grad in peft_grads.items():
        assert relative_error(fused_grads[name], grad) < 1e-12, name
        assert seen[1][name] is seen[0][name], name
    single, _ = micro_batches(model, batches[:1], autocast=False)
    assert max(relative_error(single[n], g) for n, g in peft_grads.items()) > 0.05  # the sum is not one batch


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_weight_grad_adds_into_a_held_gradient_and_hands_autograd_nothing(scale):
    generator = torch.Generator().manual_seed(0)
    m1, m2 = (torch.randn(shape, generator=generator, dtype=torch.bfloat16) for shape in ((8, 16), (16, 4)))
    param = torch.nn.Parameter(torch.zeros(8, 4))
    expected = (m1 @ m2).mul_(scale).float()
    first = fused_lora.weight_grad(m1, m2, param, scale)
    assert first.dtype == torch.float32 and torch.equal(first, expected)
    param.grad = first
    assert fused_lora.weight_grad(m1, m2, param, scale) is None
    assert param.grad is first and torch.equal(first, 2 * expected)


def test_the_gemm_writes_float32_gradients_only_on_cuda():
    param = torch.nn.Parameter(torch.zeros(2, 2))
    assert not fused_lora.gemm_writes_float32(torch.zeros(2, 2, dtype=torch.bfloat16), param)
    assert not fused_lora.gemm_writes_float32(torch.zeros(2, 2, dtype=torch.bfloat16, device="meta"), param)


def test_siblings_on_one_input_run_as_one_group_node():
    """q, k, v and gate, up of each decoder layer run as one autograd node each (float64: PEFT's
    numbers, the test above); a sibling called on another input computes its own output, PEFT's."""
    model = lora_model(torch.float64)
    input_ids = torch.randint(0, 256, (3, 24), generator=torch.Generator().manual_seed(0))
    layers = fused_lora.fuse(model)
    groups = {id(layer.lora_group): layer.lora_group for layer in layers if layer.lora_group is not None}
    assert sorted(len(g.layers) for g in groups.values()) == [2, 2, 3, 3]  # 2 decoder layers
    calls = []
    apply = fused_lora.GroupLoraFunction.apply
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fused_lora.GroupLoraFunction, "apply", lambda *a: calls.append(1) or apply(*a))
        loss, _ = step(model, input_ids, autocast=False)
    assert len(calls) == 4 and all(not g.pending for g in groups.values())  # each sibling took its output

    attention = layers[0].lora_group.layers  # q, k, v of the first decoder layer
    x = torch.randn(2, 5, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    other = torch.randn(2, 5, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    q = attention[0](x)
    k_other = attention[1](other)  # not the input q's group call was made with
    fused_lora.unfuse(layers)
    assert relative_error(q, attention[0](x)) < 1e-12
    assert relative_error(k_other, attention[1](other)) < 1e-12
