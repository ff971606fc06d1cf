"""What the engines are asked: sampling settings, chat and scoring calls, and the token ids a
conversation becomes. Both engines (sublim.backends.transformers_backend, .vllm_backend) build on
these; the package re-exports them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sampling:
    temperature: float
    top_p: float
    top_k: int  # 0 = disabled
    max_tokens: int

    @classmethod
    def from_protocol(cls, section: dict) -> "Sampling":
        return cls(section["temperature"], section["top_p"], section["top_k"], section["max_tokens"])


@dataclass(frozen=True)
class ChatCall:
    """One chat() call's worth of requests: conversations, their seed, the adapter (None: base)."""

    conversations: list[list[dict]]
    seed: int
    adapter: str | None = None


@dataclass(frozen=True)
class ScoreCall:
    """One model's scoring requests for `continuation_logprobs`: each continuation (token ids) as the
    start of the answer to each conversation (adapter None: base). The engine answers, per call, a
    conversations × continuations array of summed token logprobs at temperature 1."""

    conversations: list[list[dict]]
    continuations: list[list[int]]
    adapter: str | None = None


def chat_one_by_one(backend, calls: list[ChatCall], sampling: Sampling, desc: str) -> list[list[str]]:
    """chat_many for an engine that gains nothing from one submission: the calls in turn."""
    return [backend.chat(c.conversations, sampling, seed=c.seed, adapter=c.adapter, desc=f"{desc} {c.adapter or 'base'}")
            for c in calls]


def prompt_token_ids(tokenizer, conversations: list[list[dict]]) -> list[list[int]]:
    """Each conversation as vLLM's chat() would send it: the chat template with the generation
    prompt, tokenised without adding special tokens (the template has them)."""
    texts = tokenizer.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False)
    return tokenizer(texts, add_special_tokens=False)["input_ids"]
