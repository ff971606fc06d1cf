"""bitsandbytes' AdamW stepping all of a LoRA student's tensors at once (sizing flat_8bit_optimizer).

bitsandbytes updates one parameter tensor per call: a Python round trip and a kernel launch per
tensor, 896 of them a step at 32b. The GPU idles while the host walks that list. FlatAdamW keeps
every tensor's optimizer state inside a few flat buffers (one per param group, dtype, state width
and step count) and steps each buffer with a single call of bitsandbytes' own update. Each tensor starts on a
256-element boundary, bitsandbytes' quantisation block, so the blocks, their absmax and the values
are those of the per-tensor updates (tests/test_flat_optimizer.py). A LoRA tensor of rank 8 has a
multiple of 256 elements (8 x a width that is a multiple of 32), so no block holds padding. Where one
does, the padding is exact zeros, while the per-tensor kernel reads its block's tail as the code 128
(5.5e-7 of the block's absmax); the two differ only if every real state of such a block falls below
that. The per-tensor state entries stay in `optimizer.state` as views into the buffers: checkpoints
save and resume as bitsandbytes' do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from bitsandbytes.optim import AdamW

QUANTISATION_BLOCK = 256  # bitsandbytes.optim.optimizer.Optimizer2State.init_state's blocksize
STATE_KEYS = ("state1", "state2")
BLOCK_KEYS = ("absmax1", "absmax2")


@dataclass
class Bucket:
    """Tensors stepped as one: same group, dtype, device, state width and step count."""
    gindex: int
    pindex: int  # a member's index, for bitsandbytes' per-parameter config lookup
    params: list = field(default_factory=list)
    flat: torch.nn.Parameter | None = None
    state: dict = field(default_factory=dict)
    param_views: list = field(default_factory=list)
    grad_views: list = field(default_factory=list)


class FlatAdamW(AdamW):
    """bitsandbytes.optim.AdamW whose step updates each bucket of tensors with one call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._buckets: list[Bucket] = []
        self._layout_key: tuple = ()

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._layout_key = ()  # the loaded state lives in new tensors: lay the buffers out again

    @torch.no_grad()
    def step(self, closure=None):
        if not self.initialized:
            self.check_overrides()
            self.to_gpu()
            self.initialized = True
        if self.is_paged or self.args.max_unorm > 0.0 or self._has_overrides():
            return super().step(closure)  # per-tensor paths that flat buffers do not cover
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        key = self._stepped_params()
        if key != self._layout_key:
            self._buckets = self._lay_out()
            self._layout_key = key
        for bucket in self._buckets:
            self._step_bucket(bucket)
        return loss

    def _has_overrides(self) -> bool:
        ids = {id(p) for group in self.param_groups for p in group["params"]}
        return bool(self.mng.index2config) or any(pid in ids for pid in self.mng.pid2config)

    def _stepped_params(self) -> tuple:
        return tuple(id(p) for group in self.param_groups for p in group["params"] if p.grad is not None)

    def _lay_out(self) -> list[Bucket]:
        buckets: dict[tuple, Bucket] = {}
        for gindex, group in enumerate(self.param_groups):
            for pindex, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                if not self.state[p]:
                    self.init_state(group, p, gindex, pindex)
                state = self.state[p]
                key = (gindex, p.dtype, p.grad.dtype, p.device, state["state1"].dtype, state["step"])
                buckets.setdefault(key, Bucket(gindex, pindex)).params.append(p)
        for bucket in buckets.values():
            self._allocate(bucket)
        return list(buckets.values())

    def _allocate(self, bucket: Bucket) -> None:
        """Flat buffers for the bucket, holding each member's state so far; the members' state
        entries become views into them."""
        first = self.state[bucket.params[0]]
        eight_bit = first["state1"].dtype == torch.uint8
        spans, block_spans = [], []  # each member's (offset, numel) in the buffers, (offset, count) of its blocks
        offset = block = 0
        for p in bucket.params:
            n = p.numel()
            blocks = -(-n // QUANTISATION_BLOCK)
            spans.append((offset, n))
            block_spans.append((block, blocks))
            offset += blocks * QUANTISATION_BLOCK if eight_bit else n
            block += blocks
        device, dtype = bucket.params[0].device, bucket.params[0].dtype
        bucket.flat = torch.nn.Parameter(torch.zeros(offset, dtype=dtype, device=device), requires_grad=False)
        bucket.flat.grad = torch.zeros(offset, dtype=bucket.params[0].grad.dtype, device=device)
        bucket.state = {"step": first["step"]}
        for name in STATE_KEYS:
            bucket.state[name] = torch.zeros(offset, dtype=first[name].dtype, device=device)
        if eight_bit:
            for name in BLOCK_KEYS:
                bucket.state[name] = torch.zeros(block, dtype=torch.float32, device=device)
            bucket.state["qmap1"], bucket.state["qmap2"] = first["qmap1"], first["qmap2"]
        for p, (start, n), (bstart, nblocks) in zip(bucket.params, spans, block_spans):
            state = self.state[p]
            for name in STATE_KEYS:
                view = bucket.state[name][start:start + n].view_as(p)
                view.copy_(state[name])
                state[name] = view
            for name in BLOCK_KEYS if eight_bit else ():
                view = bucket.state[name][bstart:bstart + nblocks]
                view.copy_(state[name])
                state[name] = view
            bucket.param_views.append(bucket.flat.data[start:start + n].view_as(p))
            bucket.grad_views.append(bucket.flat.grad[start:start + n].view_as(p))

    def _step_bucket(self, bucket: Bucket) -> None:
        # the parameters are copied in each step, not only laid out once: whatever else wrote them
        # (a resumed checkpoint's adapter) is what the step starts from
        torch._foreach_copy_(bucket.param_views, [p.data for p in bucket.params])
        torch._foreach_copy_(bucket.grad_views, [p.grad for p in bucket.params])
        group = self.param_groups[bucket.gindex]
        self.state[bucket.flat] = bucket.state  # update_step reads the state of the tensor it steps
        try:
            self.update_step(group, bucket.flat, bucket.gindex, bucket.pindex)
        finally:
            del self.state[bucket.flat]  # state_dict() knows only the model's tensors
        torch._foreach_copy_([p.data for p in bucket.params], bucket.param_views)
        for p in bucket.params:
            self.state[p]["step"] = bucket.state["step"]
