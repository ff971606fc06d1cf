"""Generation engines behind one interface: `chat(conversations, sampling, seed, adapter)`.

`transformers` runs anywhere (CPU demo, tests); `vllm` is the GPU production engine.
"""

from __future__ import annotations

import importlib.util
import logging
from contextlib import contextmanager
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


def vllm_unusable_reason() -> str | None:
    """Why `auto` cannot pick vLLM here, or None when it can."""
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (pip install -e '.[gpu]')"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible"
    return None


def vllm_usable() -> bool:
    return vllm_unusable_reason() is None


def choose_backend(requested: str) -> str:
    """`auto` means vLLM when it imports and a GPU is present, else transformers."""
    if requested == "auto":
        reason = vllm_unusable_reason()
        chosen = "transformers" if reason else "vllm"
        why = f"auto: {reason}" if reason else "auto: vllm imports and a CUDA GPU is visible"
    elif requested in ("vllm", "transformers"):
        chosen, why = requested, "set by config key 'backend'"
    else:
        raise ValueError(f"config key 'backend': unknown backend {requested!r}; choose auto, vllm or transformers")
    log.info("backend: %s (%s)", chosen, why)
    return chosen


# What to lower, per stage, when a job runs out of GPU memory.
OOM_KEYS = {
    "generate": ("gpu_memory_utilization", "max_num_seqs", "max_model_len", "generate_batch_size"),
    "evaluate": ("gpu_memory_utilization", "max_num_seqs", "max_model_len", "generate_batch_size"),
    "train": ("train_micro_batch",),
}
OOM_MARKERS = ("out of memory",)
# vLLM's own error when the weights leave no room for the KV cache inside gpu_memory_utilization.
KV_CACHE_MARKERS = ("no available memory for the cache blocks", "larger than the available kv cache memory")
ENGINE_START_FAILED = "engine core initialization failed"


class GPUOutOfMemory(RuntimeError):
    """A job ran out of GPU memory; the message names the sizing keys to change."""


def is_out_of_memory(error: BaseException) -> bool:
    if type(error).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch
        return True
    return any(marker in str(error).lower() for marker in OOM_MARKERS)


def oom_message(stage: str, size: str) -> str:
    keys = ", ".join(f"sizing.{size}.{key}" for key in OOM_KEYS[stage])
    extra = f", or set sizing.{size}.gradient_checkpointing: true" if stage == "train" else ""
    return (f"{stage} for size {size} ran out of GPU memory. Lower {keys}{extra} (in the profile's "
            f"sizing.yaml or config/config.yaml), or give the size more GPUs "
            f"(sizing.{size}.tensor_parallel_size and gpus); see 'sizing' in config/README.md")


def kv_cache_message(stage: str, size: str) -> str:
    return (f"{stage} for size {size}: the model's weights leave vLLM no room for its KV cache. Raise "
            f"sizing.{size}.gpu_memory_utilization (up to ~0.95), lower sizing.{size}.max_model_len, or "
            f"split the model (sizing.{size}.tensor_parallel_size and gpus) or quantize it "
            f"(sizing.{size}.quantization: fp8); see 'sizing' in config/README.md")


@contextmanager
def explain_oom(stage: str, size: str):
    """Re-raise a CUDA/vLLM out-of-memory error with the config keys that fix it."""
    if stage not in OOM_KEYS:
        raise ValueError(f"unknown stage {stage!r}; one of {', '.join(OOM_KEYS)}")
    try:
        yield
    except Exception as error:
        text = str(error).lower()
        if any(marker in text for marker in KV_CACHE_MARKERS):
            raise GPUOutOfMemory(kv_cache_message(stage, size)) from error
        if is_out_of_memory(error):
            raise GPUOutOfMemory(oom_message(stage, size)) from error
        if ENGINE_START_FAILED in text:
            # vLLM's engine runs in a child process: its own traceback (OOM or not) is in the log above.
            raise RuntimeError(f"the vLLM engine did not start; its cause is in the log above. If that "
                               f"cause is memory: {oom_message(stage, size)}") from error
        raise


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
