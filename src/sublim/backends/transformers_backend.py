"""The transformers engine: batched sampling on CPU or GPU, LoRA adapters through PEFT."""

from __future__ import annotations

import logging

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from sublim.backends import ChatCall, Sampling, chat_one_by_one
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
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.batch_size = sizing["generate_batch_size"]
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=pick_dtype(sizing["dtype"]))
        if adapters:
            from peft import PeftModel

            names = iter(adapters.items())
            first, path = next(names)
            model = PeftModel.from_pretrained(model, path, adapter_name=first)
            for name, path in names:
                model.load_adapter(path, adapter_name=name)
        self.model = model.to(self.device).eval()

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

    def close(self) -> None:
        del self.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
