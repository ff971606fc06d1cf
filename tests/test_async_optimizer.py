"""sizing async_8bit_optimizer: bitsandbytes' 8-bit AdamW steps without its wait after every tensor."""

import types

import pytest
import torch

from sublim.train import Async8bitOptimizer, train_sizing


class WrappedOptimizer:  # what accelerate hands the callbacks: the optimizer under .optimizer
    def __init__(self, optimizer):
        self.optimizer = optimizer


def fake_bitsandbytes():
    """A module shaped like bitsandbytes.optim.optimizer: an optimizer class whose step calls the
    module's sync_gpu after each tensor, as bitsandbytes 0.50's does."""
    module = types.SimpleNamespace(waits=[])
    module.sync_gpu = lambda tensor: module.waits.append(tensor)

    class Optimizer8bit:
        def __init__(self, params, is_paged=False):
            self.params, self.is_paged = params, is_paged

        def step(self):
            for p in self.params:
                p.add_(1.0)
                module.sync_gpu(p)

    module.Optimizer8bit = Optimizer8bit
    return module


def train(callback, optimizer, steps=2):
    callback.on_train_begin(None, None, None, optimizer=WrappedOptimizer(optimizer))
    for _ in range(steps):
        optimizer.step()
    callback.on_train_end(None, None, None)


def test_the_steps_run_without_the_waits_and_the_module_is_restored_after():
    module = fake_bitsandbytes()
    original = module.sync_gpu
    optimizer = module.Optimizer8bit([torch.zeros(2), torch.zeros(3)])
    train(Async8bitOptimizer(lambda: module), optimizer)
    assert module.waits == []
    assert all(torch.equal(p, torch.full_like(p, 2.0)) for p in optimizer.params)
    assert module.sync_gpu is original
    optimizer.step()  # after training: bitsandbytes' own behaviour again
    assert len(module.waits) == 2


@pytest.mark.parametrize("case", ["paged", "other optimizer", "no bitsandbytes"])
def test_it_leaves_alone_what_it_does_not_cover(case):
    module = fake_bitsandbytes()
    params = [torch.zeros(2), torch.zeros(3)]
    if case == "paged":
        optimizer = module.Optimizer8bit(params, is_paged=True)
    else:
        optimizer = types.SimpleNamespace(step=lambda: [module.sync_gpu(p) for p in params])
    find = (lambda: None) if case == "no bitsandbytes" else (lambda: module)
    train(Async8bitOptimizer(find), optimizer)
    assert len(module.waits) == 4


def test_the_profile_turns_it_on_and_the_schema_leaves_it_off():
    import yaml

    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    profile = yaml.safe_load((root / "profiles/b200/sizing.yaml").read_text())["sizing"]["default"]
    assert train_sizing(profile)["async_8bit_optimizer"] is True
    assert train_sizing({})["async_8bit_optimizer"] is False


def test_real_bitsandbytes_8bit_adamw_gives_identical_values_without_its_waits():
    bnb = pytest.importorskip("bitsandbytes")
    import bitsandbytes.optim.optimizer as module

    def run(async_steps: bool):
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(64, 48)), torch.nn.Parameter(torch.randn(8, 64))]
        optimizer = bnb.optim.AdamW8bit(params, lr=1e-2, weight_decay=0.01, min_8bit_size=16)
        waits, original = [], module.sync_gpu
        module.sync_gpu = lambda tensor: waits.append(tensor)  # a spy in bitsandbytes' own place
        try:
            callback = Async8bitOptimizer()
            if async_steps:
                callback.on_train_begin(None, None, None, optimizer=WrappedOptimizer(optimizer))
            for step in range(3):
                torch.manual_seed(10 + step)
                for p in params:
                    p.grad = torch.randn_like(p)
                optimizer.step()
            callback.on_train_end(None, None, None)
        finally:
            module.sync_gpu = original
        return params, optimizer, waits

    fast, fast_optimizer, fast_waits = run(True)
    slow, slow_optimizer, slow_waits = run(False)
    assert fast_optimizer.state[fast[0]]["state1"].dtype == torch.uint8  # the 8-bit path ran
    assert len(slow_waits) == 6 and fast_waits == []
    for a, b in zip(fast, slow):
        assert torch.equal(a, b)
    for a, b in zip(fast, slow):
        for key in ("state1", "state2", "absmax1", "absmax2"):
            assert torch.equal(fast_optimizer.state[a][key], slow_optimizer.state[b][key])
