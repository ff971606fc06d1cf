"""Generation engines behind one interface: `chat(conversations, sampling, seed, adapter)`.

`transformers` runs anywhere (CPU demo, tests); `vllm` is the GPU production engine.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sampling:
    temperature: float
    top_p: float
    top_k: int  # 0 = disabled
    max_tokens: int

    @classmethod
    def from_protocol(cls, section: dict) -> "Sampling":
        return cls(section["temperature"], section["top_p"], section["top_k"], section["max_tokens"])


def vllm_usable() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def choose_backend(requested: str) -> str:
    """`auto` means vLLM when it imports and a GPU is present, else transformers."""
    if requested == "auto":
        chosen = "vllm" if vllm_usable() else "transformers"
    elif requested in ("vllm", "transformers"):
        chosen = requested
    else:
        raise ValueError(f"unknown backend {requested!r}; choose auto, vllm or transformers")
    log.info("backend: %s (requested %s)", chosen, requested)
    return chosen


def open_backend(requested: str, model_dir: str, sizing: dict, adapters: dict[str, str] | None = None):
    """The engine for one job, with every LoRA adapter it will swap between registered by name."""
    from sublim.models import check_adapter_dir

    for path in (adapters or {}).values():
        check_adapter_dir(path)  # before an engine loads for minutes only to fail on a missing file
    name = choose_backend(requested)
    if name == "vllm":
        from sublim.backends.vllm_backend import VLLMBackend

        return VLLMBackend(model_dir, sizing, adapters or {})
    from sublim.backends.transformers_backend import TransformersBackend

    return TransformersBackend(model_dir, sizing, adapters or {})
