"""vLLM's side of sublim.hashed_noise: a logits processor that turns each of its requests' rows into
a Gumbel-max draw, so the engine's greedy argmax samples them.

A request opts in with SamplingParams(temperature=0, extra_args={HASHED_SAMPLING_KEY: {seed, temperature}})
(`sampling_kwargs` in vllm_backend builds it): vLLM then takes the argmax of the row this processor
returned, logits / T + G(seed, position), and never runs its per-request generators. Requests without
the key are left to vLLM. The engine loads this class by name (`logits_processors` in engine_args),
so the module imports vLLM and is imported by vLLM only.
"""

from __future__ import annotations

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from sublim.backends.vllm_backend import HASHED_SAMPLING_KEY as EXTRA_ARGS_KEY
from sublim.hashed_noise import add_gumbel_


class HashedGumbelSampler(LogitsProcessor):
    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.device = device
        # batch row -> (seed, 1 / temperature, the request's output token ids, which vLLM keeps current)
        self.requests: dict[int, tuple[int, float, list[int]]] = {}
        self.order: list[int] = []
        self.rows = self.seeds = self.inverse_temperatures = None

    @classmethod
    def validate_params(cls, params) -> None:
        options = (params.extra_args or {}).get(EXTRA_ARGS_KEY)
        if options is None:
            return
        if params.temperature != 0.0 or not options.get("temperature", 0) > 0:
            raise ValueError(f"{EXTRA_ARGS_KEY}: the request's temperature must be 0 (vLLM's argmax) and its "
                             f"{EXTRA_ARGS_KEY}['temperature'] > 0, got {params.temperature} and {options}")

    def is_argmax_invariant(self) -> bool:
        return False  # it is what the argmax picks

    @staticmethod
    def _state(params, _prompt_ids, output_ids: list[int]):
        options = (params.extra_args or {}).get(EXTRA_ARGS_KEY)
        if options is None:
            return None
        return int(options["seed"]), 1.0 / float(options["temperature"]), output_ids

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if process_dict_updates(self.requests, batch_update, self._state):
            self.order = sorted(self.requests)
            self.rows = torch.tensor(self.order, dtype=torch.int32)
            self.seeds = torch.tensor([self.requests[r][0] for r in self.order], dtype=torch.int64)
            self.inverse_temperatures = torch.tensor([self.requests[r][1] for r in self.order], dtype=torch.float32)
            if self.device.type != "cpu":
                self.rows, self.seeds, self.inverse_temperatures = (
                    t.to(self.device, non_blocking=True) for t in (self.rows, self.seeds, self.inverse_temperatures))

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.requests:
            return logits
        # a row samples the token at position len(output ids): under async scheduling the list already
        # holds a placeholder for every token sampled before, so the length is right either way
        positions = torch.tensor([len(self.requests[r][2]) for r in self.order], dtype=torch.int64)
        return add_gumbel_(logits, self.rows, self.seeds, positions.to(logits.device, non_blocking=True),
                           self.inverse_temperatures)
