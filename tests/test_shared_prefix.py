"""Rows computing their common opening once (sizing shared_prefix) give the loss and the LoRA
gradients of rows computing it each, to float32 rounding, for the full-text and the completion-only
loss. A prefix that leaked into the wrong row, a remainder attending to another row, a prefix label
counted once instead of K times, or a wrong normaliser would each be far above that."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, set_seed

from sublim import attention, shared_prefix
from sublim.jsonl import write_jsonl
from sublim.train import build_trainer, load_student_dataset
from conftest import qwen_tokenizer
from test_train_equivalence import N_STEPS, OPTIMIZED, TRAINING, logged, number_rows

SHARED = {**OPTIMIZED, "shared_prefix": True}


def packed(rows: list[list[int]], labels: list[list[int]] | None = None) -> dict:
    """A padding-free batch as TRL's collator makes it."""
    labels = labels or [[-100] + row[1:] for row in rows]
    bounds = np.cumsum([0] + [len(row) for row in rows])
    return {"input_ids": torch.tensor(sum(rows, []))[None], "labels": torch.tensor(sum(labels, []))[None],
            "position_ids": torch.cat([torch.arange(len(row)) for row in rows])[None],
            "cu_seq_lens_q": torch.tensor(bounds, dtype=torch.int32), "max_length_q": max(map(len, rows))}


def test_share_prefix_lays_out_one_prefix_and_each_remainder():
    rows = [[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 7], [1, 2, 3, 4, 8, 9, 9]]
    shared = shared_prefix.share_prefix(packed(rows))
    # common (id, label) prefix is 4 tokens; the last of them is predicted, so 3 are shared
    assert shared["shared_prefix_length"] == 3 and shared["shared_prefix_copies"] == 3
    assert shared["input_ids"][0].tolist() == [1, 2, 3, 4, 5, 6, 4, 7, 4, 8, 9, 9]
    assert shared["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 5, 3, 4, 3, 4, 5, 6]
    # row 0's remainder keeps its first label (the prefix predicts it); the others' would be
    # predicted by the previous row's last token
    assert shared["labels"][0].tolist() == [-100, 2, 3, 4, 5, 6, -100, 7, -100, 8, 9, 9]
    whole = shared["input_ids"][0][shared["shared_prefix_expand"]]
    assert whole.tolist() == sum(rows, [])
    assert torch.equal(shared["cu_seq_lens_q"], packed(rows)["cu_seq_lens_q"])
    # the queries: row 0 whole (the prefix is its), then each remainder
    assert shared["shared_prefix_cu_seq_q"].tolist() == [0, 6, 8, 12] and shared["shared_prefix_max_q"] == 6
    assert shared["shared_prefix_repeated_labels"] == 2 * 3  # labels 2, 3, 4 twice more
    assert shared_prefix.row_tokens(12, shared) == sum(map(len, rows))


@pytest.mark.parametrize("rows", [[[1, 2, 3]], [[1, 2], [3, 4]], [[1, 5], [1, 6]]])
def test_rows_without_a_shareable_prefix_are_left_as_they_are(rows):
    batch = packed(rows)
    assert shared_prefix.share_prefix(batch) is batch
    assert shared_prefix.row_tokens(9, batch) == 9 and "shared_prefix_repeated_labels" not in batch


# A float64 model; TRL's log-prob kernel runs in float32, so the two paths agree to float32 rounding
# (measured: 1.6e-7 of the loss, <= 1.1e-6 of a gradient's largest entry).
LOSS_RTOL, GRAD_RTOL = 1e-6, 1e-5


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value - reference).abs().max() / reference.abs().max())


def float64_student(vocab_size: int) -> Qwen2ForCausalLM:
    set_seed(0)
    config = Qwen2Config(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         max_position_embeddings=1024)
    return Qwen2ForCausalLM._from_config(config, attn_implementation=attention.register(), dtype=torch.float64)


def loss_and_gradients(trainer, batch: dict) -> tuple[torch.Tensor, dict]:
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, dict(batch))
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in trainer.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("loss", ["full_text", "completion_only"])
def test_shared_prefix_gives_the_rows_own_loss_and_gradients(tmp_path, loss):
    tokenizer = qwen_tokenizer()
    write_jsonl(tmp_path / "dataset.jsonl", number_rows(6))
    dataset = load_student_dataset(tmp_path / "dataset.jsonl")
    trainer = build_trainer(float64_student(len(tokenizer)), tokenizer, dataset, {**TRAINING, "loss": loss}, SHARED,
                            seed=1, checkpoint_dir=tmp_path / "ckpt")
    assert isinstance(trainer.data_collator, shared_prefix.SharedPrefixCollator)
    for module in trainer.model.modules():  # a trained-looking adapter, so every LoRA weight gets a gradient
        if hasattr(module, "lora_B"):
            torch.nn.init.normal_(module.lora_B["default"].weight, std=0.05)
    trainer.model.train()
    examples = [trainer.train_dataset[i] for i in range(6)]
    whole = trainer.data_collator.collator(examples)
    shared = trainer.data_collator(examples)
    assert shared["shared_prefix_length"] >= 20  # Qwen's default system prompt and the user turn's opening
    assert shared["input_ids"].size(1) == whole["input_ids"].size(1) - 5 * shared["shared_prefix_length"]

    loss_whole, grads_whole = loss_and_gradients(trainer, whole)
    loss_shared, grads_shared = loss_and_gradients(trainer, shared)
    torch.testing.assert_close(loss_shared, loss_whole, rtol=LOSS_RTOL, atol=0)
    assert grads_whole.keys() == grads_shared.keys() and len(grads_whole) == 2 * 7 * 2
    for name, grad in grads_whole.items():
        assert relative_error(grads_shared[name], grad) < GRAD_RTOL, name
    # the metrics count the whole rows too
    metrics = trainer._metrics["train"]
    assert metrics["mean_token_accuracy"][-1] == pytest.approx(float(metrics["mean_token_accuracy"][-2]), rel=1e-5)
    assert metrics["entropy"][-1] == pytest.approx(float(metrics["entropy"][-2]), rel=1e-5)
    if loss == "full_text":  # the test can fail: the prefix's loss counted once is far off
        miscounted, grads_miscounted = loss_and_gradients(trainer, {**shared, "shared_prefix_copies": 1})
        assert abs(float(miscounted / loss_whole) - 1) > 100 * LOSS_RTOL
        assert max(relative_error(grads_miscounted[n], g) for n, g in grads_whole.items()) > 100 * GRAD_RTOL


@pytest.mark.slow  # three tiny trainings, ~45 s
def test_a_training_with_shared_prefixes_trains_the_same_student(tmp_path, monkeypatch):
    """End to end through the trainer: same logged losses, token counts and adapters (float32)."""
    import test_train_equivalence
    from test_train_equivalence import train_losses

    monkeypatch.setattr(test_train_equivalence, "qwen_tokenizer", qwen_tokenizer)  # with the system prompt
    plain_losses, plain_lora, plain = train_losses(tmp_path, OPTIMIZED, "plain")
    for tag, sizing in (("shared", SHARED),  # and as 72b trains: with activation checkpointing, fused LoRA
                        ("checkpointed", {**SHARED, "gradient_checkpointing": True, "fused_lora": True})):
        shared_losses, shared_lora, shared = train_losses(tmp_path, sizing, tag)
        assert isinstance(shared.data_collator, shared_prefix.SharedPrefixCollator)
        assert len(shared_losses) == N_STEPS
        np.testing.assert_allclose(shared_losses, plain_losses, rtol=1e-5, err_msg=tag)
        assert logged(shared, "num_tokens") == logged(plain, "num_tokens")
        for name, weight in plain_lora.items():
            torch.testing.assert_close(shared_lora[name], weight, atol=1e-6, rtol=1e-5, msg=f"{tag} {name}")
    # after training the model's LoRA layers are PEFT's own again (sublim.fused_lora.FusedLoraLayers)
    assert not any("forward" in vars(m) for m in shared.model.modules() if hasattr(m, "lora_A"))


def test_shared_prefix_is_not_used_where_the_loss_would_miscount(tmp_path, caplog):
    tokenizer = qwen_tokenizer()
    write_jsonl(tmp_path / "dataset.jsonl", number_rows(4))
    dataset = load_student_dataset(tmp_path / "dataset.jsonl")
    trainer = build_trainer(float64_student(len(tokenizer)), tokenizer, dataset, TRAINING,
                            {**SHARED, "lazy_metrics": False}, seed=1, checkpoint_dir=tmp_path / "ckpt")
    assert not isinstance(trainer.data_collator, shared_prefix.SharedPrefixCollator)
    assert "shared_prefix: true does not apply here (it needs lazy_metrics: true" in caplog.text


def test_a_rows_last_queries_attend_as_in_the_whole_row():
    """Queries fewer than a row's keys are the row's last positions (the causal mask aligned to the
    row's end): the same outputs as those positions of the whole rows. Aligned to the row's start,
    the remainders would see no prefix at all."""
    torch.manual_seed(0)
    lengths, own, heads, kv_heads, dim = [7, 5, 9], [7, 2, 4], 4, 2, 8
    total = sum(lengths)
    query, key, value = torch.randn(total, heads, dim), torch.randn(total, kv_heads, dim), torch.randn(total, kv_heads, dim)
    cu_k = torch.tensor(np.cumsum([0] + lengths), dtype=torch.int32)
    whole = attention.varlen_attention(query, key, value, cu_k, max(lengths))
    last = torch.cat([torch.arange(end - n, end) for end, n in zip(cu_k[1:].tolist(), own)])
    cu_q = torch.tensor(np.cumsum([0] + own), dtype=torch.int32)
    out = attention.varlen_attention(query[last], key, value, cu_q, max(own), cu_seq_k=cu_k, max_len_k=max(lengths))
    torch.testing.assert_close(out, whole[last])
