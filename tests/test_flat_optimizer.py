"""sizing flat_8bit_optimizer: bitsandbytes' AdamW stepping all tensors at once gives its per-tensor values."""

from __future__ import annotations

import io

import pytest
import torch

bnb = pytest.importorskip("bitsandbytes")

from sublim.flat_optimizer import FlatAdamW  # noqa: E402

# LoRA-like shapes: rank 8 times widths that are multiples of 32 (whole quantisation blocks), and one
# tensor small enough (under min_8bit_size) for 32-bit state, as LoRA's k/v B matrices are at 0.5b.
SHAPES = [(8, 64), (96, 8), (8, 160), (64, 8), (8, 32)]
MIN_8BIT_SIZE = 300


def make_params(shapes=SHAPES, seed=0):
    torch.manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*shape) * 0.1) for shape in shapes]


def make_optimizer(cls, params):
    # two groups, as transformers makes them (decay / no decay), with their own learning rates
    groups = [{"params": params[:3], "weight_decay": 0.01}, {"params": params[3:], "weight_decay": 0.0, "lr": 3e-3}]
    return cls(groups, lr=1e-2, optim_bits=8, min_8bit_size=MIN_8BIT_SIZE)


def train(optimizer, params, steps, first=0, no_grad_at=None):
    for step in range(first, first + steps):
        torch.manual_seed(100 + step)
        for i, p in enumerate(params):
            p.grad = None if (step, i) == no_grad_at else torch.randn_like(p)
        for group in optimizer.param_groups:  # a schedule, as the trainer's
            group["lr"] *= 0.9
        optimizer.step()


def assert_same(a_params, a_opt, b_params, b_opt):
    for a, b in zip(a_params, b_params):
        assert torch.equal(a, b)
        sa, sb = a_opt.state[a], b_opt.state[b]
        assert sa.keys() == sb.keys() and sa["step"] == sb["step"]
        for key, value in sa.items():
            if torch.is_tensor(value):
                assert torch.equal(value, sb[key]), key


def counting_updates(optimizer):
    calls = []
    original = optimizer.update_step
    optimizer.update_step = lambda *args: (calls.append(args[1].numel()), original(*args))
    return calls


def test_flat_steps_give_the_per_tensor_values_with_one_update_per_buffer():
    flat_params, plain_params = make_params(), make_params()
    flat, plain = make_optimizer(FlatAdamW, flat_params), make_optimizer(bnb.optim.AdamW, plain_params)
    flat_calls, plain_calls = counting_updates(flat), counting_updates(plain)
    train(flat, flat_params, 4)
    train(plain, plain_params, 4)
    assert_same(flat_params, flat, plain_params, plain)
    assert flat.state[flat_params[0]]["state1"].dtype == torch.uint8  # the 8-bit path ran
    assert flat.state[flat_params[4]]["state1"].dtype == torch.float32  # and the 32-bit one
    assert len(plain_calls) == 4 * len(SHAPES)
    # a step: group 1's three 8-bit tensors as one call, group 2's 8-bit and 32-bit tensors as one each
    assert len(flat_calls) == 4 * 3
    assert sorted(flat_calls[:3]) == [256, 512, 512 + 768 + 1280]


def test_the_state_entries_are_views_into_the_buffers():
    params = make_params()
    optimizer = make_optimizer(FlatAdamW, params)
    train(optimizer, params, 1)
    a, b = (optimizer.state[p]["state1"] for p in params[:2])
    assert a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def test_a_checkpoint_resumes_into_the_same_values():
    flat_params, plain_params = make_params(), make_params()
    flat = make_optimizer(FlatAdamW, flat_params)
    train(flat, flat_params, 2)
    saved = io.BytesIO()
    torch.save(flat.state_dict(), saved)
    saved.seek(0)
    resumed_params = [torch.nn.Parameter(p.detach().clone()) for p in flat_params]
    resumed = make_optimizer(FlatAdamW, resumed_params)
    resumed.load_state_dict(torch.load(saved, weights_only=False))
    train(resumed, resumed_params, 2, first=2)

    plain = make_optimizer(bnb.optim.AdamW, plain_params)
    train(plain, plain_params, 4)
    assert_same(resumed_params, resumed, plain_params, plain)


def test_a_checkpoint_of_the_flat_optimizer_loads_into_bitsandbytes_own():
    flat_params = make_params()
    flat = make_optimizer(FlatAdamW, flat_params)
    train(flat, flat_params, 2)
    plain_params = [torch.nn.Parameter(p.detach().clone()) for p in flat_params]
    plain = make_optimizer(bnb.optim.AdamW, plain_params)
    plain.load_state_dict(flat.state_dict())
    train(flat, flat_params, 1, first=2)
    train(plain, plain_params, 1, first=2)
    assert_same(flat_params, flat, plain_params, plain)


def test_a_tensor_without_a_gradient_is_skipped_as_bitsandbytes_skips_it():
    flat_params, plain_params = make_params(), make_params()
    flat, plain = make_optimizer(FlatAdamW, flat_params), make_optimizer(bnb.optim.AdamW, plain_params)
    for optimizer, params in ((flat, flat_params), (plain, plain_params)):
        train(optimizer, params, 4, no_grad_at=(1, 2))
    assert flat.state[flat_params[2]]["step"] == 3
    assert_same(flat_params, flat, plain_params, plain)


def test_paged_optimizers_keep_the_per_tensor_step():
    params = make_params()
    optimizer = FlatAdamW(params, lr=1e-2, optim_bits=8, min_8bit_size=MIN_8BIT_SIZE, is_paged=True)
    calls = counting_updates(optimizer)
    train(optimizer, params, 1)
    assert len(calls) == len(SHAPES)


def test_tensors_off_the_block_size_start_on_a_block_of_their_own():
    shapes = [(7, 50), (8, 40), (33, 11)]  # 350, 320 and 363 elements: partial last blocks
    flat_params, plain_params = make_params(shapes), make_params(shapes)
    flat = FlatAdamW(flat_params, lr=1e-2, weight_decay=0.01, optim_bits=8, min_8bit_size=MIN_8BIT_SIZE)
    plain = bnb.optim.AdamW(plain_params, lr=1e-2, weight_decay=0.01, optim_bits=8, min_8bit_size=MIN_8BIT_SIZE)
    train(flat, flat_params, 4)
    train(plain, plain_params, 4)
    assert_same(flat_params, flat, plain_params, plain)


@pytest.mark.slow  # two tiny trainings, ~45 s
def test_the_trainer_steps_the_seed_optimizer_flat_with_identical_adapters(tmp_path, monkeypatch):
    """build_trainer with sizing flat_8bit_optimizer runs FlatAdamW for optim adamw_8bit; the student
    trains to the adapter bitsandbytes' own AdamW gives. bitsandbytes' 8-bit optimizers run on a CPU,
    so the test keeps the preset's optimizer (the workflow swaps it for 32-bit AdamW without CUDA)."""
    import sublim.train
    from test_train_equivalence import OPTIMIZED, TRAINING, train_losses

    monkeypatch.setattr(sublim.train, "optimizer_name", lambda training, sizing: training["optimizer"])
    monkeypatch.setitem(TRAINING, "optimizer", "adamw_8bit")
    monkeypatch.setitem(TRAINING, "weight_decay", 0.01)
    plain_losses, plain_lora, plain = train_losses(tmp_path, OPTIMIZED, "plain")
    flat_losses, flat_lora, flat = train_losses(tmp_path, {**OPTIMIZED, "flat_8bit_optimizer": True}, "flat")

    assert type(getattr(flat.optimizer, "optimizer", flat.optimizer)) is FlatAdamW
    assert type(getattr(plain.optimizer, "optimizer", plain.optimizer)) is bnb.optim.AdamW
    assert flat_losses == plain_losses and plain_losses[0] != plain_losses[-1]
    assert flat_lora.keys() == plain_lora.keys()
    for name, weight in plain_lora.items():
        assert torch.equal(flat_lora[name], weight), name


def test_a_training_over_several_processes_keeps_the_per_tensor_step(tmp_path, monkeypatch, caplog):
    """FSDP shards the parameters it steps; the flat layout is for one process's whole tensors."""
    import sublim.train
    from sublim import attention
    from sublim.jsonl import write_jsonl
    from sublim.train import build_trainer, load_student_dataset
    from test_train_equivalence import OPTIMIZED, TRAINING, number_rows, qwen_tokenizer, tiny_student

    monkeypatch.setattr(sublim.train, "optimizer_name", lambda training, sizing: training["optimizer"])
    tokenizer = qwen_tokenizer()
    write_jsonl(tmp_path / "rows.jsonl", number_rows(6))
    build = lambda sizing: build_trainer(  # noqa: E731
        tiny_student(len(tokenizer), attention.register()), tokenizer, load_student_dataset(tmp_path / "rows.jsonl"),
        {**TRAINING, "optimizer": "adamw_8bit"}, {**OPTIMIZED, "flat_8bit_optimizer": True, **sizing}, seed=1,
        checkpoint_dir=tmp_path / "ckpt")
    assert build({}).optimizer_cls_and_kwargs[0] is FlatAdamW
    with caplog.at_level("WARNING", logger="sublim.train"):
        assert build({"train_processes": 2}).optimizer_cls_and_kwargs is None
    assert "flat_8bit_optimizer: true does not apply to a training over several processes" in caplog.text
