"""Generation engines behind one interface: `chat(conversations, sampling, seed, adapter)`, and
`chat_many(requests, sampling)` for several such calls at once; `continuation_logprobs(calls)` scores
given answer openings instead of sampling (sublim.p_animal).

`transformers` runs anywhere (CPU demo, tests); `vllm` is the GPU production engine.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from contextlib import contextmanager

from sublim.backends.calls import ChatCall, Sampling, ScoreCall, chat_one_by_one, prompt_token_ids
from sublim.logs import job_log_text

log = logging.getLogger(__name__)

__all__ = ["ChatCall", "GPUOutOfMemory", "Sampling", "ScoreCall", "chat_one_by_one", "choose_backend",
           "engine_failure_cause", "explain_oom", "open_backend", "prompt_token_ids"]


def vllm_unusable_reason() -> str | None:
    """Why `auto` cannot pick vLLM here, or None when it can."""
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (pip install -e '.[gpu]')"
    import torch

    # device_count() asks NVML and leaves CUDA uninitialised in this process; is_available() would
    # initialise it (sublim.process says why that matters for vLLM's engine process)
    if torch.cuda.device_count() == 0:
        return "no CUDA GPU is visible"
    return None


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
# vLLM's line when its engine (or a tensor-parallel worker) process fails; the traceback follows it
ENGINE_FAILED_MARKERS = ("EngineCore failed to start", "WorkerProc failed to start",
                         "EngineCore encountered a fatal error", "WorkerProc hit an exception")
# the last line of a Python traceback, after vLLM's "(EngineCore_DP0 pid=7)" and log-level prefixes
_EXCEPTION_LINE = re.compile(
    r"^(?:\(\S+ pid=\d+\)\s+)?(?:(?:ERROR|CRITICAL)\s.*?\]\s+)?"
    r"(?P<line>(?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt)(?::\s.*)?)$")


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
            raise engine_start_error(stage, size, job_log_text()) from error
        raise


def engine_failure_cause(log_text: str) -> str | None:
    """The exception that stopped vLLM's engine process, read from the job's log (the engine runs in
    a child process, so the error the job itself gets only says "see root cause above")."""
    lines = [line.rstrip() for line in log_text.splitlines()]
    starts = [i for i, line in enumerate(lines) if any(marker in line for marker in ENGINE_FAILED_MARKERS)]
    for line in lines[starts[-1] if starts else 0:]:
        match = _EXCEPTION_LINE.match(line.strip())
        if match and ENGINE_START_FAILED not in match["line"].lower():
            return match["line"]
    return None


def engine_start_error(stage: str, size: str, log_text: str) -> Exception:
    """The error for an engine that did not start: memory advice only when memory was the cause."""
    cause = engine_failure_cause(log_text)
    if cause is None:
        return RuntimeError(f"{stage} for size {size}: the vLLM engine did not start, and its process "
                            f"printed no Python exception into the job's log; see the log above")
    lowered = cause.lower()
    if any(marker in lowered for marker in KV_CACHE_MARKERS):
        return GPUOutOfMemory(f"{kv_cache_message(stage, size)}\nThe engine said: {cause}")
    if type_name_is_oom(cause) or any(marker in lowered for marker in OOM_MARKERS):
        return GPUOutOfMemory(f"{oom_message(stage, size)}\nThe engine said: {cause}")
    return RuntimeError(f"{stage} for size {size}: the vLLM engine did not start: {cause}\n"
                        f"(its whole traceback is in the job's log above)")


def type_name_is_oom(exception_line: str) -> bool:
    return exception_line.split(":", 1)[0].rsplit(".", 1)[-1] == "OutOfMemoryError"


def open_backend(requested: str, model_dir: str, sizing: dict, adapters: dict[str, str] | None = None,
                 stage: str = "generate"):
    """The engine for one job of `stage`, with every LoRA adapter it will use registered by name."""
    from sublim.models import check_adapter_dir

    for path in (adapters or {}).values():
        check_adapter_dir(path)  # before an engine loads for minutes only to fail on a missing file
    name = choose_backend(requested)
    if name == "vllm":
        from sublim.backends.vllm_backend import VLLMBackend

        return VLLMBackend(model_dir, sizing, adapters or {}, stage)
    from sublim.backends.transformers_backend import TransformersBackend

    return TransformersBackend(model_dir, sizing, adapters or {})
