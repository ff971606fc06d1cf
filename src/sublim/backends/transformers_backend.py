"""The transformers engine: batched sampling on CPU or GPU, LoRA adapters through PEFT."""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from sublim.backends.calls import ChatCall, Sampling, ScoreCall, chat_one_by_one, prompt_token_ids
from sublim.seeds import derive_seed

log = logging.getLogger(__name__)

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def pick_dtype(setting: str) -> torch.dtype:
    if setting != "auto":
        return DTYPES[setting]
    return torch.bfloat16 if torch.cuda.is_available() else torch.float32


class TransformersBackend:
    name = "transformers"

    def __init__(self, model_dir: str, sizing: dict, adapters: dict[str, str]):
        device = "cuda" if torch.cuda.is_available() else "cpu"
        tokenizer = AutoTokenizer.from_pretrained(model_dir)  # _setup pads it on the left
        # straight onto the device: a 32b model read into host memory first would take minutes
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=pick_dtype(sizing["dtype"]), device_map=device)
        self._setup(model, tokenizer, sizing, adapters)

    @classmethod
    def from_model(cls, model, tokenizer, sizing: dict, adapters: dict[str, str]) -> "TransformersBackend":
        """The backend on a model already in memory (benchmarks: random weights built on the GPU)."""
        backend = cls.__new__(cls)
        backend._setup(model, tokenizer, sizing, adapters)
        return backend

    def _setup(self, model, tokenizer, sizing: dict, adapters: dict[str, str]) -> None:
        self.device = model.device
        self.batch_size = sizing["generate_batch_size"]
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer
        if adapters:
            from peft import PeftModel

            names = iter(adapters.items())
            first, path = next(names)
            # low_cpu_mem_usage: the LoRA weights load straight into layers made on the model's device
            model = PeftModel.from_pretrained(model, path, adapter_name=first, low_cpu_mem_usage=True)
            for name, path in names:
                model.load_adapter(path, adapter_name=name, low_cpu_mem_usage=True)
        self.model = model.eval()

    def _generation_config(self, sampling: Sampling) -> GenerationConfig:
        # A fresh config, so the model's own generation_config.json (top_k 20, repetition
        # penalty…) cannot change the protocol's sampling.
        return GenerationConfig(
            do_sample=sampling.temperature > 0,
            temperature=sampling.temperature if sampling.temperature > 0 else None,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            max_new_tokens=sampling.max_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )

    def _adapter_context(self, adapter: str | None):
        if not hasattr(self.model, "disable_adapter"):
            if adapter:
                raise ValueError(f"adapter {adapter!r} was not registered when the engine was opened")
            return torch.no_grad()
        if adapter is None:
            return self.model.disable_adapter()
        self.model.set_adapter(adapter)
        return torch.no_grad()

    def sampler(self, sampling: Sampling) -> str:
        """What draws this sampling's tokens, for the provenance files."""
        return "transformers generate: torch's generator, seeded per batch"

    @torch.no_grad()
    def chat(self, conversations: list[list[dict]], sampling: Sampling, seed: int,
             adapter: str | None = None, desc: str = "generating") -> list[str]:
        """One completion per conversation. Each batch is seeded from (seed, batch start), so a
        rerun with the same batch size reproduces every sample."""
        config = self._generation_config(sampling)
        texts = [
            self.tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
            for c in conversations
        ]
        outputs: list[str] = []
        with self._adapter_context(adapter):
            for start in tqdm(range(0, len(texts), self.batch_size), desc=desc, unit="batch"):
                batch = self.tokenizer(texts[start:start + self.batch_size], return_tensors="pt",
                                       padding=True, add_special_tokens=False).to(self.device)
                torch.manual_seed(derive_seed(seed, start))
                generated = self.model.generate(**batch, generation_config=config)
                new_tokens = generated[:, batch["input_ids"].shape[1]:]
                outputs += self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return outputs

    def chat_many(self, calls: list[ChatCall], sampling: Sampling, desc: str = "generating") -> list[list[str]]:
        return chat_one_by_one(self, calls, sampling, desc)

    @torch.no_grad()
    def continuation_logprobs(self, calls: list[ScoreCall], desc: str = "scoring") -> list[np.ndarray]:
        """Per call, the summed log-probability of each continuation after each conversation's chat
        prompt (the ids vLLM gets: prompt_token_ids), from the logits at temperature 1. Each prompt runs
        once; its cached keys and values then serve every continuation, `generate_batch_size` at a time."""
        return [self._score(call, f"{desc} {call.adapter or 'base'}") for call in calls]

    def _score(self, call: ScoreCall, desc: str) -> np.ndarray:
        prompts = prompt_token_ids(self.tokenizer, call.conversations) if call.conversations else []
        continuations = [list(c) for c in call.continuations]
        scores = np.zeros((len(prompts), len(continuations)))
        with self._adapter_context(call.adapter):
            for row, prompt in enumerate(tqdm(prompts, desc=desc, unit="prompt")):
                out = self.model(input_ids=torch.tensor([prompt], device=self.device), use_cache=True)
                first = torch.log_softmax(out.logits[0, -1].float(), dim=-1).cpu()
                for start in range(0, len(continuations), self.batch_size):
                    batch = continuations[start:start + self.batch_size]
                    scores[row, start:start + len(batch)] = self._score_batch(out.cache, first, batch)
        return scores

    def _score_batch(self, prompt_cache, first: torch.Tensor, batch: list[list[int]]) -> np.ndarray:
        """The continuations after one cached prompt: the first token from the prompt's last logits, the
        rest from one forward pass of the continuations, right-padded (padding after a token cannot
        change it: the attention is causal)."""
        totals = np.array([float(first[c[0]]) for c in batch])
        width = max(map(len, batch))
        if width == 1:
            return totals
        ids = torch.full((len(batch), width - 1), self.tokenizer.pad_token_id, dtype=torch.long)
        for i, continuation in enumerate(batch):
            ids[i, :len(continuation) - 1] = torch.tensor(continuation[:-1], dtype=torch.long)
        cache = copy.deepcopy(prompt_cache)
        cache.batch_repeat_interleave(len(batch))
        logits = self.model(input_ids=ids.to(self.device), cache=cache, use_cache=True).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()  # [:, k] predicts continuation token k + 1
        for i, continuation in enumerate(batch):
            totals[i] += sum(float(logprobs[i, k, token]) for k, token in enumerate(continuation[1:]))
        return totals

    def close(self) -> None:
        del self.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
