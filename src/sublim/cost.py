"""What a grid costs before it runs: GPU-hours per stage and size, the wall time on a profile's
cards, the disk it fills, and which sizes do not fit a card. The one home of this arithmetic:
`make estimate` (sublim.estimate), `make status` (sublim.status: spent against projected) and
benchmarks/grid_projection.py all call it.

Every rate is read from the H200 records in benchmarks/results/ (benchmarks/README.md says what
each one is). What is assumed on top is listed by `assumptions()`; each per-size figure carries
its basis: measured at that shape, interpolated between the two measured shapes around it by
parameter count, or extrapolated from the nearest one (time per token proportional to parameters,
i.e. the same MFU). GPU time is counted in card-seconds: a job holding a quarter of a card (four
packed trainings) for an hour costs 0.25 GPU-hours.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import statistics
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from sublim.backends.vllm_backend import engine_mode, stage_setting
from sublim.config import eval_epochs, kept_epochs, sizing_for
from sublim.gpu_share import GPU_SLOTS, train_gpu_slots, train_processes, whole_gpu_slots

TOKENS_PER_ROW = 138  # a kept row in the Qwen template with its default system prompt (DESIGN.md)
PEAK_BF16_FLOPS = 989e12  # one H200's dense bf16 peak: the records' MFU is measured against it
GB = 1e9
GIB = 2**30
# Usable memory per card (nvidia-smi's total less the driver's reserve; config/README.md, "72b")
CARD_GIB = {"h200": 139.0, "b200": 179.0}
CHECKPOINTING_FACTOR = 1.5  # activation checkpointing recomputes the forward: 6N instead of 4N per token
OPTIMIZER_STATE = {"adamw_torch": 2.0, "adamw_8bit": 0.5}  # moments per LoRA parameter, in fp32 units
STAGES = ("generate", "train", "evaluate", "engine_start")

# Which records give which rate (benchmarks/README.md): the workflow configuration of each shape.
# Every record's optimizer step runs without host waits: 32-bit fused AdamW, or the seed's 8-bit AdamW
# stepping flat buffers (flat_8bit_optimizer; 7b-32b and the packed 0.5b, 1.5b and paired 3b records)
# or each tensor without bitsandbytes' waits (async_8bit_optimizer). TRAIN_FLAT's and TRAIN_ASYNC's
# pairs give what per-tensor steps and their waits cost where a sizing keeps them.
# profiles/b200's whole configuration as it is (shared prefix with the queries in place, fused LoRA,
# 8-bit AdamW on flat buffers, pinned batch copies; 32b: 30 rows): every record of it since its last
# change, pooled, so that one machine's spread (2-7 % between sessions) weighs less than in one record
TRAIN_WORKFLOW = ("train_flat_optimizer_fifteenth_session.json", "train_dataloader_workers_32b_sixteenth_session.json",
                  "train_python_gc_seventeenth_session.json", "train_adapter_casts_seventeenth_session.json",
                  "train_lora_grads_nineteenth_session.json", "train_lora_grads_twenty_first_session.json",
                  "train_expandable_segments_twenty_second_session.json",
                  "train_lora_host_path_twenty_second_session.json", "train_lora_groups_twenty_second_session.json")
# runs under another name that ran that configuration as it is now: expandable segments through the
# harness's switch before they were a sizing key, and the fused LoRA layers as they are, patched back by a
# reverted trial's switch (benchmarks/README.md, "Twenty-second session")
WORKFLOW_ALIASES = ("workflow+expandable_segments=true", "workflow+lora_autocast_guards=true")
TRAIN_ALONE = {  # one training on the card: records, configuration, the optimizer it ran
    "0.5b": (("train_0.5b_third_session.json",), "workflow+mps=false", "adamw_torch_fused"),
    "1.5b": (("train_1.5b_third_session.json",), "workflow+mps=false", "adamw_torch_fused"),
    "3b": (("train_3b_third_session.json",), "workflow", "adamw_torch_fused"),
    # the runs that were not the first of their process (a process's first configuration ran 2-8 %
    # slower: warm-up beyond the harness's two steps, benchmarks/README.md "Fourteenth session")
    "7b": (TRAIN_WORKFLOW, "workflow", "adamw_8bit"),
    "14b": (TRAIN_WORKFLOW, "workflow", "adamw_8bit"),
    "32b": (TRAIN_WORKFLOW, "workflow", "adamw_8bit"),
}
# four trainings on one card under MPS (gpu_share 0.25), profiles/b200's whole configuration as it is:
# tokens/s of the whole card, every record of it pooled
TRAIN_PACKED = {
    "0.5b": ("concurrent_0.5b_x4_fifteenth_session.json",),
    "1.5b": ("concurrent_1.5b_x4_fifteenth_session.json", "concurrent_1.5b_x4_sixteenth_session.json"),
}
TRAIN_PAIRED = {  # two trainings on one card (gpu_share 0.5), profiles/b200's whole configuration as it is
    "3b": ("concurrent_3b_x2_fifteenth_session.json", "concurrent_3b_x2_sixteenth_session.json"),
}
# The older records above ran without sizing's shared_prefix and fused_lora; these pairs (one process,
# or one concurrent run, each with both on and both off) give their gain per shape. A record with both
# on is taken back to a rate without them by the same gain, so that every rate means the same.
TRAIN_LEVERS = "train_levers_seventh_session.json"
# 8-bit AdamW with bitsandbytes' waits against without them (sizing async_8bit_optimizer), pairs in one
# process; the cost model's training rates are without the waits
TRAIN_ASYNC = "train_async_optimizer_ninth_session.json"
# 8-bit AdamW stepping each tensor against flat buffers (sizing flat_8bit_optimizer), ABAB pairs in one
# process; the cost model's training rates are with flat buffers
TRAIN_FLAT = TRAIN_WORKFLOW[0]
# fused LoRA layers casting their adapter once per optimizer step against once per micro-batch (as
# every record before it did), ABAB pairs in one process; 32b alone trains two micro-batches a step
TRAIN_CASTS = "train_adapter_casts_seventeenth_session.json"
CASTS_ONCE_PER_STEP = "once per optimizer step"
# fused LoRA layers writing the adapter's gradients in float32 from the GEMM, later micro-batches summed in
# it, against bf16 gradients cast and summed by autograd (as every record before them did): pairs in one
# process per shape and machine, ABAB and BABA
TRAIN_GRADS = ("train_lora_grads_nineteenth_session.json", "train_lora_grads_twenty_first_session.json")
GRADS_FROM_GEMM = "float32 from the GEMM"
# PyTorch's allocator with expandable segments (sizing expandable_segments) against without (as every
# record before them ran): pairs in one process per shape and machine, AB and BA
TRAIN_ALLOC = "train_expandable_segments_twenty_second_session.json"
# fused LoRA layers with q, k, v and gate, up each one autograd node (stacked A matrices, input gradients
# summed in the GEMMs) against each layer its own (as every record before them ran): pairs in one process
TRAIN_GROUPS = "train_lora_groups_twenty_second_session.json"
GROUPED = "q, k, v and gate, up"
VLLM_EAGER = "vllm_shapes_h200.json"
VLLM_HASHED = "vllm_hashed_sampling_h200.json"  # hashed sampling against vLLM's generators, same session
# compiled generate jobs as the workflow runs them (forked engine, the compile cache filled): what a
# compiled engine start adds over an eager one once a size's first job has filled the cache
JOB_COMPILED = "engine_start_compiled_7b_eleventh_session.json"
# engines with CUDA graphs and without torch.compile (sizing engine_torch_compile false) against compiled
# and eager ones: same session, prompts and batch
VLLM_GRAPHS = "vllm_graphs_thirteenth_session.json"
# generate engines at two batch widths (max_num_seqs), same session, shape and mode: what a sizing's batch
# other than the generation rate's record's changes
VLLM_BATCH = ("vllm_batch_sixteenth_session.json", "vllm_batch_eighteenth_session.json")
START_METHODS = "engine_start_method_h200.json"  # the vLLM records' engines were spawned; jobs fork
# fresh processes importing torch, transformers and PEFT and loading a model's saved bf16 weights onto
# the GPU from the page cache: what a training job does before its first step
JOB_LOADS = "transformers_evaluate_h200.json"


# -- model shapes ---------------------------------------------------------------------------------

@functools.cache
def known_shapes() -> dict[str, dict]:
    return yaml.safe_load(resources.files("sublim").joinpath("data/model_shapes.yaml").read_text())


def record_shape_repo(shape: str) -> str:
    """The Qwen2.5 model a benchmark record's shape name stands for ("7b" -> Qwen/Qwen2.5-7B-Instruct)."""
    return f"Qwen/Qwen2.5-{shape.upper()}-Instruct"


def qwen_shapes() -> dict[str, dict]:
    """The Qwen2.5 architectures by size name ("0.5b" … "72b"): the benchmarks' random-init shapes."""
    return {repo.split("-")[1].lower(): shape for repo, shape in known_shapes().items()
            if repo.startswith("Qwen/Qwen2.5-")}


def model_shape(model: dict) -> dict | None:
    """config.json values of a config's model: the table for Hub repos, the folder for local models."""
    if model.get("repo") in known_shapes():
        return known_shapes()[model["repo"]]
    if model.get("source") == "local":
        path = Path(model["path"]).expanduser() / "config.json"
        if path.exists():
            return json.loads(path.read_text())
    return None


def parameter_count(shape: dict) -> int:
    """Parameters of a Qwen2-architecture model (biases on q, k, v; two norms per layer)."""
    h, i, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    kv = kv_dim(shape)
    attention = (h * h + h) + 2 * (h * kv + kv) + h * h
    per_layer = attention + 3 * h * i + 2 * h
    embeddings = shape["vocab_size"] * h * (1 if shape.get("tie_word_embeddings") else 2)
    return layers * per_layer + embeddings + h


def kv_dim(shape: dict) -> int:
    head = shape.get("head_dim") or shape["hidden_size"] // shape["num_attention_heads"]
    return shape["num_key_value_heads"] * head


def projection_dims(shape: dict) -> dict[str, tuple[int, int]]:
    """(in, out) features of each linear layer of a Qwen2-architecture decoder layer."""
    h, i, kv = shape["hidden_size"], shape["intermediate_size"], kv_dim(shape)
    return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


def lora_parameters(shape: dict, rank: int, targets: list[str]) -> int | None:
    """Parameters of a LoRA adapter (A: rank x in, B: out x rank per target per layer); None for a
    target module this architecture table does not know."""
    dims = projection_dims(shape)
    if any(t not in dims for t in targets):
        return None
    return shape["num_hidden_layers"] * sum(rank * sum(dims[t]) for t in targets)


# -- interpolation by parameter count -------------------------------------------------------------

@dataclass(frozen=True)
class Figure:
    value: float
    basis: str

    @property
    def measured(self) -> bool:
        return self.basis.startswith("measured")


def by_params(points: dict[str, tuple[float, float]], params_b: float, beyond: str = "proportional") -> Figure:
    """A per-unit time at `params_b` from measured shapes {name: (params_b, value)}: exact at a
    measured shape, linear in parameters between two, and beyond the largest proportional to
    parameters (`beyond="proportional"`: the same MFU) or equal to it (`"flat"`). Below the
    smallest: equal to it (small models are bound by overheads, not by parameters)."""
    if not points:
        raise ValueError("no measured shape to scale from")
    ordered = sorted(points.items(), key=lambda item: item[1][0])
    for name, (p, value) in ordered:
        if abs(p - params_b) <= 0.01 * p:
            return Figure(value, f"measured at {name}")
    (low_name, (low_p, low_v)), (high_name, (high_p, high_v)) = ordered[0], ordered[-1]
    if params_b < low_p:
        return Figure(low_v, f"{low_name}'s (smallest measured shape)")
    if params_b > high_p:
        if beyond == "proportional":
            return Figure(high_v * params_b / high_p, f"extrapolated from {high_name} in proportion to parameters")
        return Figure(high_v, f"{high_name}'s (largest measured shape)")
    for (a_name, (a_p, a_v)), (b_name, (b_p, b_v)) in zip(ordered, ordered[1:]):
        if a_p <= params_b <= b_p:
            value = a_v + (b_v - a_v) * (params_b - a_p) / (b_p - a_p)
            return Figure(value, f"interpolated between {a_name} and {b_name} by parameters")
    raise AssertionError("unreachable")


# -- the records ----------------------------------------------------------------------------------

@dataclass
class Measurements:
    """Per measured shape: (params_b, seconds per unit). Units: a trained token (card-seconds, without
    shared_prefix and fused_lora, whose gains are apart), a
    generated token, an evaluation request, an adapter's fixed cost, an engine start (with close)."""
    train_alone: dict[str, tuple[float, float]] = field(default_factory=dict)
    train_packed: dict[str, tuple[float, float]] = field(default_factory=dict)
    train_paired: dict[str, tuple[float, float]] = field(default_factory=dict)
    train_mfu: dict[str, float] = field(default_factory=dict)
    # tokens/s with shared_prefix and fused_lora on / both off, for rows of TOKENS_PER_ROW tokens
    levers_gain_alone: dict[str, tuple[float, float]] = field(default_factory=dict)
    levers_gain_packed: dict[str, tuple[float, float]] = field(default_factory=dict)
    # tokens/s of 8-bit AdamW without bitsandbytes' per-tensor waits / with them, one training alone
    async_gain: dict[str, tuple[float, float]] = field(default_factory=dict)
    # tokens/s of 8-bit AdamW stepping flat buffers / stepping each tensor, one training alone
    flat_gain: dict[str, tuple[float, float]] = field(default_factory=dict)
    # tokens/s with the adapter cast once per optimizer step / once per micro-batch (shapes measured)
    casts_gain: dict[str, float] = field(default_factory=dict)
    grads_gain: dict[str, float] = field(default_factory=dict)
    # tokens/s with expandable segments / without, one training alone (shapes measured)
    alloc_gain: dict[str, float] = field(default_factory=dict)
    # tokens/s with the fused LoRA layers' sibling groups / each layer alone (shapes measured)
    groups_gain: dict[str, float] = field(default_factory=dict)
    generate_token: dict[str, tuple[float, float]] = field(default_factory=dict)
    start_generate: dict[str, tuple[float, float]] = field(default_factory=dict)
    start_evaluate: dict[str, tuple[float, float]] = field(default_factory=dict)
    eval_request: dict[str, tuple[float, float]] = field(default_factory=dict)
    eval_adapter: dict[str, tuple[float, float]] = field(default_factory=dict)
    completion_tokens: int = 0
    answer_tokens: int = 0
    # compiled engines (enforce_eager false): eager / compiled time per generated token, and what a
    # compiled engine start adds with the compile cache empty (per measured shape) or filled (7b's jobs)
    compiled_speedup: dict[str, tuple[float, float]] = field(default_factory=dict)
    compile_cold: dict[str, tuple[float, float]] = field(default_factory=dict)
    compile_warm_s: float = 0.0
    # CUDA graphs without torch.compile: generation time over a compiled engine's, per shape; and what
    # such an engine's start and close add over an eager one's
    graphs_factor: dict[str, tuple[float, float]] = field(default_factory=dict)
    graphs_start_s: float = 0.0
    # what a forked engine saves against a spawned one, start and close (the vLLM records spawned)
    fork_saving_s: float = 0.0
    # a vLLM job's own import of vLLM (and torch), before its engine starts: forked runs' mean
    job_import_s: float = 0.0
    # a training job before its first step: its imports (mean of fresh processes), and its model's load
    # from the page cache onto the GPU per measured shape
    train_import_s: float = 0.0
    train_load: dict[str, tuple[float, float]] = field(default_factory=dict)
    # generation time with hashed_sampling / with vLLM's own seeded sampler on an engine without the
    # hashed sampler's processor, per shape (same session, mode and batch, empty prefix cache each pass)
    hashed_factor: dict[str, tuple[float, float]] = field(default_factory=dict)
    # the max_num_seqs of each shape's generation rate record; per (shape, mode, batch, record's batch):
    # generation time at batch over the record's batch, and the seconds its start and close add (>= 0)
    generate_batch: dict[str, int] = field(default_factory=dict)
    batch_figures: dict[tuple[str, str, int, int], tuple[float, float]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def steady_run(record: dict) -> bool:
    """Whether a training run counts: not the first configuration of its process, which runs 2-8 %
    slower (warm-up beyond the harness's two steps). Records without the field ran one per process."""
    return record.get("position_in_process", 2) > 1


def _read(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"benchmark record {path}: {error}") from None
    return data if isinstance(data, list) else [data]


def _shape_params(shape: str) -> float:
    return parameter_count(known_shapes()[record_shape_repo(shape)]) / 1e9


def load_measurements(records_dir: str | Path) -> Measurements:
    """The rates of benchmarks/results/ the cost model uses; a missing record names itself."""
    root = Path(records_dir)
    m = Measurements()

    def need(name: str) -> list[dict]:
        path = root / name
        if not path.exists():
            raise FileNotFoundError(f"benchmark record {path} is missing; the cost model reads it "
                                    f"(benchmarks/README.md says what made it)")
        if name not in m.files:
            m.files.append(name)
        return _read(path)

    m.async_gain = switch_gains(need(TRAIN_ASYNC), "async_8bit_optimizer")
    m.flat_gain = switch_gains(need(TRAIN_FLAT), "flat_8bit_optimizer")
    m.casts_gain = pair_gains(need(TRAIN_CASTS), casts_once_per_step)
    m.grads_gain = pair_gains([r for name in TRAIN_GRADS for r in need(name)], grads_from_gemm)
    m.alloc_gain = pair_gains(need(TRAIN_ALLOC), expandable_segments)
    m.groups_gain = pair_gains(need(TRAIN_GROUPS), lora_grouped)
    # what a run of the configuration as it was lacks, and what each lack's pairs measured
    carried = ((casts_once_per_step, m.casts_gain), (grads_from_gemm, m.grads_gain),
               (expandable_segments, m.alloc_gain), (lora_grouped, m.groups_gain))
    for record_key, gains in lever_gains(need(TRAIN_LEVERS)).items():
        shape, packed = record_key
        (m.levers_gain_packed if packed else m.levers_gain_alone)[shape] = (_shape_params(shape), gains)

    def without_levers(shape: str, runs: list[dict], gains: dict) -> float:
        """What takes the runs' tokens/s (and MFU) to neither lever, where they ran with both."""
        if _levers(runs[0]) != (True, True):
            return 1.0
        rows = runs[0]["processes_detail"][0] if runs[0].get("processes") else runs[0]
        return row_gain(rows, TOKENS_PER_ROW) / by_params(gains, _shape_params(shape), beyond="flat").value

    def rate(runs: list[dict], shape: str | None = None) -> float:
        return statistics.mean(r["tokens_per_s"] * carry_factor(r, shape) for r in runs)

    def carry_factor(run: dict, shape: str | None) -> float:
        """A run of the configuration as it was, carried to it as it is: the fused LoRA layers' adapter
        cast once per optimizer step, their gradients in float32 from the GEMM, sibling layers grouped, and
        expandable segments where a pair measured them at the shape."""
        return math.prod(1.0 if has(run) else gains.get(shape, 1.0) for has, gains in carried)

    for shape, (names, configuration, _optimizer) in TRAIN_ALONE.items():
        configurations = (configuration, *WORKFLOW_ALIASES) if configuration == "workflow" else (configuration,)
        runs = [r for name in names for r in need(name) if r.get("config") in configurations
                and r.get("shape", shape) == shape and steady_run(r) and r.get("projection", True)]
        if not runs:
            raise ValueError(f"benchmark records {', '.join(names)} in {root} have no '{configuration}' run of {shape}")
        factor = without_levers(shape, runs, m.levers_gain_alone)
        m.train_alone[shape] = (_shape_params(shape), 1 / (rate(runs, shape) * factor))
        m.train_mfu[shape] = statistics.mean(r["mfu"] * carry_factor(r, shape) for r in runs) * factor
    for shares, table, processes in ((m.train_packed, TRAIN_PACKED, 4), (m.train_paired, TRAIN_PAIRED, 2)):
        for shape, names in table.items():
            runs = [r for name in names for r in need(name) if r.get("processes") == processes]
            if not runs:
                raise ValueError(f"benchmark records {', '.join(names)} in {root} have no run of {processes} "
                                 f"trainings at once: the packed training rate of {shape}")
            gains = m.levers_gain_packed if processes == 4 else m.levers_gain_alone  # as train_job applies them
            shares[shape] = (_shape_params(shape), 1 / (rate(runs) * without_levers(shape, runs, gains)))

    vllm = [r for r in need(VLLM_EAGER) if "error" not in r]
    for r in vllm:  # a later record of a shape replaces an earlier one
        shape, p = r["shape"], _shape_params(r["shape"])
        if r["stage"] == "generate" and r["mode"] == "eager" and r["seeds"] == "per_request":
            m.generate_token[shape] = (p, r["generate_s"] / (r["prompts"] * r["max_tokens"]))
            m.generate_batch[shape] = r["max_num_seqs"]
            if not r.get("first_engine_on_machine"):  # that start holds vLLM's one-time kernel JIT
                m.start_generate[shape] = (p, r["engine_start_s"] + r["engine_close_s"])
            m.completion_tokens = r["max_tokens"]
        elif r["stage"] == "evaluate":
            m.start_evaluate[shape] = (p, r["engine_start_s"] + r["engine_close_s"])
            m.answer_tokens = r["max_tokens"]
    for shape in {r["shape"] for r in vllm if r["stage"] == "evaluate"}:
        runs = {r["requests_per_epoch"]: r for r in vllm if r["stage"] == "evaluate" and r["shape"] == shape}
        (few, a), (many, b) = sorted(runs.items())[0], sorted(runs.items())[-1]
        adapters = a["adapters"]
        per_request = (b["one_submission_s"] - a["one_submission_s"]) / (adapters * (many - few))
        per_adapter = (a["one_submission_s"] - adapters * few * per_request) / adapters
        p = _shape_params(shape)
        m.eval_request[shape] = (p, per_request)
        m.eval_adapter[shape] = (p, max(per_adapter, 0.0))

    generated = [r for r in vllm if r["stage"] == "generate" and r["seeds"] == "per_request"]
    for r in generated:  # compiled against eager: same shape, same batch (max_num_seqs)
        eager = [e for e in generated if e["mode"] == "eager" and e["shape"] == r["shape"]
                 and e["max_num_seqs"] == r["max_num_seqs"]]
        if r["mode"] == "compiled" and eager:
            p, base = _shape_params(r["shape"]), eager[-1]
            m.compiled_speedup[r["shape"]] = (p, base["generate_s"] / r["generate_s"])
            eager_start = (by_params(m.start_generate, p, beyond="flat").value - base["engine_close_s"]
                           if base.get("first_engine_on_machine") else base["engine_start_s"])
            m.compile_cold[r["shape"]] = (p, r["engine_start_s"] - eager_start)
    m.hashed_factor = hashed_factors(need(VLLM_HASHED))
    m.batch_figures = batch_figures([r for name in VLLM_BATCH for r in need(name)])
    start_runs = need(START_METHODS)
    starts = {method: [r["engine_start_s"] + r["close_s"] for r in start_runs
                       if r.get("method") == method and "error" not in r] for method in ("spawn", "fork")}
    m.fork_saving_s = statistics.mean(starts["spawn"]) - statistics.mean(starts["fork"])
    m.job_import_s = statistics.mean(r["import_vllm_s"] for r in start_runs
                                     if r.get("method") == "fork" and "error" not in r)
    m.compile_warm_s = compile_warm(need(JOB_COMPILED), m)
    m.graphs_factor, m.graphs_start_s = graphs_figures(need(VLLM_GRAPHS))
    loads = [r for r in need(JOB_LOADS) if "error" not in r]
    m.train_import_s = statistics.mean(r["import_s"] for r in loads)
    for shape in {r["shape"] for r in loads if r.get("load_s") is not None}:
        m.train_load[shape] = (_shape_params(shape), statistics.mean(r["load_s"] for r in loads if r["shape"] == shape
                                                                     and r.get("load_s") is not None))
    return m


def pair_gains(records: list[dict], on) -> dict[str, float]:
    """Per shape: tokens/s of the runs where `on(record)` over the others. Within each process (a
    session's machine and shape) the mean of each side's runs (steady_run's); over several processes
    the mean of their ratios, so that one host's speed does not enter the gain. A record marked
    `"projection": false` says why it is left out."""
    usable = [r for r in records if "error" not in r and r.get("projection", True) and steady_run(r)]
    ratios: dict[str, list[float]] = {}
    for process in dict.fromkeys((r.get("session"), r.get("machine"), r["shape"]) for r in usable):
        runs = [r for r in usable if (r.get("session"), r.get("machine"), r["shape"]) == process]
        sides = [[r["tokens_per_s"] for r in runs if on(r) is side] for side in (True, False)]
        if all(sides):
            ratios.setdefault(process[2], []).append(statistics.mean(sides[0]) / statistics.mean(sides[1]))
    return {shape: statistics.mean(values) for shape, values in ratios.items()}


def casts_once_per_step(run: dict) -> bool:
    """Whether a training run's fused LoRA layers cast their adapter once per optimizer step."""
    return run.get("adapter_casts") == CASTS_ONCE_PER_STEP


def grads_from_gemm(run: dict) -> bool:
    """Whether a training run's fused LoRA layers took the adapter's gradients in float32 from the GEMM."""
    return run.get("adapter_grads", "").startswith(GRADS_FROM_GEMM)


def expandable_segments(run: dict) -> bool:
    """Whether a training run's allocator had expandable segments: its sizing's key, or the flag of the
    runs that set them through the harness's switch before the key existed."""
    return bool((run.get("sizing") or {}).get("expandable_segments") or run.get("expandable_segments"))


def lora_grouped(run: dict) -> bool:
    """Whether a training run's fused LoRA layers ran sibling layers as one node (sublim.fused_lora)."""
    return run.get("lora_groups", "").startswith(GROUPED)


def switch_gains(records: list[dict], key: str) -> dict[str, tuple[float, float]]:
    """Per shape: (parameters, tokens/s with the sizing switch `key` on over off)."""
    gains = pair_gains(records, lambda r: bool((r.get("sizing") or {}).get(key)))
    return {shape: (_shape_params(shape), gain) for shape, gain in gains.items()}


def graphs_figures(records: list[dict]) -> tuple[dict[str, tuple[float, float]], float]:
    """Engines with CUDA graphs and no torch.compile, against the same session's engines of the same
    shape and batch: per shape, the generation time over a compiled engine's; and the mean of what
    their start and close add over an eager engine's (a machine's first engine, which holds vLLM's
    one-time kernel JIT, left out)."""
    runs = [r for r in records if "error" not in r and r.get("seeds") == "per_request"]
    factor, extra = {}, []
    for graphs in (r for r in runs if r["mode"] == "graphs"):
        def same(mode):
            return [r for r in runs if r["mode"] == mode and r["shape"] == graphs["shape"]
                    and r["max_num_seqs"] == graphs["max_num_seqs"]]
        if same("compiled"):
            factor[graphs["shape"]] = (_shape_params(graphs["shape"]), graphs["generate_s"] / same("compiled")[-1]["generate_s"])
        eager = [r for r in same("eager") if not r.get("first_engine_on_machine")]
        if eager and not graphs.get("first_engine_on_machine"):
            extra.append(graphs["engine_start_s"] + graphs["engine_close_s"]
                         - eager[-1]["engine_start_s"] - eager[-1]["engine_close_s"])
    if not factor or not extra:
        raise ValueError(f"{VLLM_GRAPHS} needs a graphs engine beside a compiled one and beside an eager one "
                         "of the same shape and batch")
    return factor, statistics.mean(extra)


def batch_figures(records: list[dict]) -> dict[tuple[str, str, int, int], tuple[float, float]]:
    """Per (shape, mode, batch, other batch) measured in one session: the seeded generation's time at
    `batch` sequences over its time at the other (means of the runs), and what the wider or narrower
    engine's start and close add (a machine's first engine, which holds vLLM's one-time kernel JIT, left
    out, and a pair without such a start on both sides left out; at least 0: a batch never makes a start
    shorter, a negative difference is the runs' spread)."""
    runs = [r for r in records if "error" not in r and r.get("stage") == "generate" and r.get("seeds") == "per_request"]
    groups: dict[tuple, dict[int, list[dict]]] = {}
    for r in runs:
        groups.setdefault((r.get("session"), r["shape"], r["mode"]), {}).setdefault(r["max_num_seqs"], []).append(r)
    figures = {}
    for (_session, shape, mode), batches in groups.items():
        for batch, other in itertools.permutations(batches, 2):
            time = (statistics.mean(r["generate_s"] for r in batches[batch])
                    / statistics.mean(r["generate_s"] for r in batches[other]))
            starts = [[r["engine_start_s"] + r["engine_close_s"] for r in batches[b]
                       if not r.get("first_engine_on_machine")] for b in (batch, other)]
            if all(starts):  # else the batch's start is unmeasured: no figure
                figures[(shape, mode, batch, other)] = (time, max(0.0, statistics.mean(starts[0]) - statistics.mean(starts[1])))
    return figures


def compile_warm(jobs: list[dict], m: Measurements) -> float:
    """A compiled engine's start and close in a forked job with the compile cache filled, less the
    eager start and close the model takes for that shape (an eager generate job's engine start, less
    the job's import of vLLM, which the runs time apart)."""
    runs = [r for r in jobs if "error" not in r and not r["enforce_eager"] and r["method"] == "fork"]
    if not runs:
        raise ValueError(f"{JOB_COMPILED} holds no forked compiled job: the warm compile start is unmeasured")
    eager = _engine_start(m, m.start_generate, _shape_params(runs[0]["shape"]), "eager")[0] - m.job_import_s
    return statistics.mean(r["engine_start_s"] + r["close_s"] for r in runs) - eager


def hashed_factors(records: list[dict]) -> dict[str, tuple[float, float]]:
    """Per shape: a generation's time drawn by the hashed sampler over the same prompts drawn by vLLM's
    own seeded sampler in an engine without the hashed sampler's processor (which puts the engine on
    vLLM's V1 model runner), at the same mode and batch. Only hashed passes that began
    with an empty prefix cache count: before the eleventh session the hashed pass followed a pass over
    the same prompts in the same engine and skipped most of their prefill, which a job, seeing each
    prompt once, never does (the plain per-request pass is an engine's first, so always fair)."""
    factors = {}
    for hashed in (r for r in records if "error" not in r and r.get("seeds") == "hashed"
                   and r.get("prefix_cache_reset_between_passes")):
        plain = [r for r in records if "error" not in r and r.get("seeds") == "per_request"
                 and not r.get("hashed_sampler_loaded") and r["shape"] == hashed["shape"]
                 and r["mode"] == hashed["mode"] and r["max_num_seqs"] == hashed["max_num_seqs"]]
        if plain:
            factors[hashed["shape"]] = (_shape_params(hashed["shape"]), hashed["generate_s"] / plain[-1]["generate_s"])
    return factors


def _levers(record: dict) -> tuple[bool, bool]:
    sizing = record.get("sizing") or {}
    return bool(sizing.get("shared_prefix")), bool(sizing.get("fused_lora"))


def row_gain(record: dict, row_tokens: float) -> float:
    """What sharing the record's prefix saves on rows of `row_tokens` against its own rows: the
    prefix is computed once per micro-batch, so a row costs its tokens less P·(K-1)/K."""
    rows = record.get("micro_batch", 1)
    shared = record.get("shared_prefix_length", 0) * (rows - 1) / rows
    if not shared:
        return 1.0
    own = record["mean_row_tokens"]
    return (row_tokens / (row_tokens - shared)) / (own / (own - shared))


def lever_gains(records: list[dict]) -> dict[tuple[str, bool], float]:
    """Per (shape, packed): the mean over same-call pairs of tokens/s with shared_prefix and
    fused_lora on against both off, carried to rows of TOKENS_PER_ROW tokens."""
    pairs: dict[tuple[str, bool], list[float]] = {}
    for on in (r for r in records if "error" not in r and _levers(r) == (True, True)):
        packed = bool(on.get("processes"))
        off = [r for r in records if "error" not in r and _levers(r) == (False, False)
               and r["shape"] == on["shape"] and r["session_call"] == on["session_call"]
               and bool(r.get("processes")) == packed]
        if off:
            gain = on["tokens_per_s"] / statistics.mean(r["tokens_per_s"] for r in off)
            batch = on["processes_detail"][0] if packed else on  # a packed run's rows: its processes'
            pairs.setdefault((on["shape"], packed), []).append(gain * row_gain(batch, TOKENS_PER_ROW))
    return {key: statistics.mean(gains) for key, gains in pairs.items()}


def compiled_figures(m: Measurements, params_b: float) -> tuple[Figure, Figure, float]:
    """At `params_b`: the compiled engine's speedup, its extra start with an empty compile cache, and
    with a filled one (7b's, at most the cold one)."""
    speedup = by_params(m.compiled_speedup, params_b, beyond="flat")
    cold = by_params(m.compile_cold, params_b, beyond="flat")
    return speedup, cold, min(m.compile_warm_s, cold.value)


def assumptions(m: Measurements) -> list[str]:
    """What the projection assumes beyond the records, in words (the JSON's `assumptions`)."""
    return [
        f"training: epochs x n_keep rows x {TOKENS_PER_ROW} tokens a row (DESIGN.md: the Qwen template with its "
        f"default system prompt; the benchmark rows were ~115 tokens before the seventh session and ~132 "
        f"since, a per-token rate carries over); the "
        f"workflow configuration of profiles/b200 (records: {', '.join(sorted({n for v in TRAIN_ALONE.values() for n in v[0]}))}"
        f"; 7b-32b: profiles/b200's whole configuration as it is, every record of it since its last change "
        f"pooled (32b: the fifteenth, sixteenth, seventeenth, nineteenth, twenty-first and twenty-second sessions'; "
        f"14b: the fifteenth, seventeenth, twenty-first and twenty-second's; 7b: the fifteenth, twenty-first and "
        f"twenty-second's; runs of the configuration as it was carried to it as it is, see below), the mean of "
        f"their runs that were not the first configuration of their process (a first ran 2-8 % slower); "
        f"host spread: the twenty-second session's three machines ran 32b's configuration as it is at 4,849-5,065 "
        f"tokens/s, the twenty-first's two at 4,789 and 4,998 (4.4 % apart), the nineteenth's at 4,977; "
        f"the sixteenth and seventeenth sessions' 32b 1.9 % and 2.5 % slower than the "
        f"fifteenth's (4,803 and 4,771 against 4,895 tokens/s), the fifteenth session's machine ran per-tensor 8-bit steps 1-2 % faster than the "
        f"fourteenth's (7b 22,075 against 21,659 tokens/s, 32b 4,812 against 4,711), the thirteenth's 7b "
        f"2.5 % slower and 32b 2.3 % faster, the ninth's 32b 7 % faster than the seventh's); sizes with gpu_share 0.25 at the card's rate with "
        f"four packed trainings ({'; '.join(f'{s}: ' + ' + '.join(n) for s, n in TRAIN_PACKED.items())}: profiles/b200's "
        f"whole configuration, 60-80 steps, every record pooled, lower bounds: all timed tokens over the span from the first "
        f"process's timed start to the last one's end), "
        f"so a cell's GPU time is its wall time / 4; gpu_share 0.5 at the card's rate with two trainings, "
        f"where a record pairs that shape ({'; '.join(f'{s}: ' + ' + '.join(n) for s, n in TRAIN_PAIRED.items())}), "
        f"else at one training's",
        "sizing shared_prefix and fused_lora (both on in profiles/b200): the records' rate x the gain of "
        "both against neither (a record that ran with both: its own rate, carried to the rows below), "
        f"measured in pairs in one process ({TRAIN_LEVERS}; packed sizes from pairs of "
        "four-process runs) and carried from the harness's rows to rows of "
        f"{TOKENS_PER_ROW} tokens (a row computes its tokens less the shared prefix's P·(K-1)/K): "
        + ", ".join(f"{s} x {v:.2f}" for s, (_, v) in sorted(m.levers_gain_alone.items(), key=lambda i: i[1][0]))
        + " alone, " + ", ".join(f"{s} x {v:.2f}" for s, (_, v) in sorted(m.levers_gain_packed.items(),
                                                                         key=lambda i: i[1][0]))
        + " packed; beyond 32b 32b's gain; with only one of the two on, or a training over several "
        "processes (where the trainer does not share prefixes), no gain is counted",
        "training beyond 32b at 32b's MFU (time per token in proportion to parameters), x "
        f"{CHECKPOINTING_FACTOR} where the sizing turns activation checkpointing on; measured with the "
        "completion-only loss (taken not to change the rate); the alone records of 0.5b-3b (used only "
        "between measured shapes) ran 32-bit fused AdamW, the packed and paired ones and 7b-32b's the seed's "
        "8-bit AdamW stepping flat buffers (sizing flat_8bit_optimizer; 3b's paired record and 7b-32b's from "
        "the fifteenth session, 0.5b's and 1.5b's packed ones too); where the sizing turns it off the "
        "trainings alone take longer by the per-tensor steps (pairs in " f"{TRAIN_FLAT}: "
        + ", ".join(f"{s} x {v:.2f}" for s, (_, v) in sorted(m.flat_gain.items(), key=lambda i: i[1][0]))
        + ") and, where async_8bit_optimizer is off too, by bitsandbytes' wait after every tensor (pairs in "
        f"{TRAIN_ASYNC}: " + ", ".join(f"{s} x {v:.2f}" for s, (_, v) in sorted(m.async_gain.items(),
                                                                            key=lambda i: i[1][0]))
        + "), interpolated by parameters, the smallest measured shape's below it; fused LoRA layers casting "
        "their adapter once per optimizer step: 32b's records from before the seventeenth session, which cast it "
        "in each of its two micro-batches, carried over by the pairs in " f"{TRAIN_CASTS} ("
        + ", ".join(f"{s} x {v:.3f}" for s, v in m.casts_gain.items())
        + "; the sizes of one micro-batch a step cast once a step either way and keep their records' rate); "
        "fused LoRA layers writing the adapter's gradients in float32 from the GEMM, a step's later micro-batches "
        "summed in it: 7b-32b's records from before the nineteenth session, which took them in bf16, cast them "
        "and let autograd sum them, carried over by the pairs in " + " + ".join(TRAIN_GRADS) + " (the mean of "
        "each process's ratio: "
        + ", ".join(f"{s} x {v:.3f}" for s, v in sorted(m.grads_gain.items(), key=lambda i: _shape_params(i[0])))
        + "; 0.5b-3b keep their records' rate: their packed pairs, 0.5b's in "
        "concurrent_0.5b_x4_lora_grads_nineteenth_session.json, spread more than they differ); "
        "PyTorch's allocator with expandable segments (sizing expandable_segments): the records without them "
        f"carried to them by the pairs in {TRAIN_ALLOC} (the mean of each process's ratio: "
        + ", ".join(f"{s} x {v:.3f}" for s, v in sorted(m.alloc_gain.items(), key=lambda i: _shape_params(i[0])))
        + "), a training alone whose sizing turns them off at a measured shape paying the gain back; "
        "fused LoRA layers running q, k, v and gate, up as one autograd node each: the records of each layer "
        f"alone carried by the pairs in {TRAIN_GROUPS} ("
        + ", ".join(f"{s} x {v:.3f}" for s, v in sorted(m.groups_gain.items(), key=lambda i: _shape_params(i[0])))
        + "; 0.5b-3b, not measured, keep their records' rate); "
        f"runs named {' or '.join(WORKFLOW_ALIASES)} ran the configuration as it is and are pooled with it; "
        "a job's imports and model load before its first step counted (the mean import of fresh processes, "
        f"{m.train_import_s:.1f} s, and the load from the page cache onto the GPU measured at "
        + ", ".join(f"{sh} {v:.1f} s" for sh, (_, v) in sorted(m.train_load.items(), key=lambda i: i[1][0]))
        + f", {JOB_LOADS}, in proportion to parameters beyond); adapter saves and checkpoints not counted",
        f"generation: n_prompts completions of {m.completion_tokens} tokens each, the records' max_tokens taken "
        f"as the realistic mean completion (Qwen writes ~10 three-digit numbers: ~40-50 tokens), whatever "
        f"max_tokens allows; no top-up (min_rows 0); per-request seeds; vLLM 0.26 on one H200 "
        f"({VLLM_EAGER})",
        "sizing hashed_sampling, where the sizing turns it on for generation: the "
        "generation time x the hashed sampler's time over vLLM's own seeded sampler in an engine without its "
        "processor, same prompts, mode and batch, one session, each pass from an empty prefix cache "
        f"({VLLM_HASHED}: " + ", ".join(
            f"{s} x {v:.2f}" for s, (_, v) in sorted(m.hashed_factor.items(), key=lambda i: i[1][0]))
        + "), interpolated by parameters, flat beyond; evaluation keeps the per-request rate",
        "compiled engines (enforce_eager false): the eager rate x the compiled speedup measured at the same "
        "batch (" + ", ".join(f"{s} x {v:.2f}" for s, (_, v) in sorted(m.compiled_speedup.items(),
                                                                       key=lambda i: i[1][0])) +
        "), interpolated by parameters; "
        "an engine start longer by the measured compile time for the first job of a size and stage (empty "
        "compile cache: " + ", ".join(f"{s} +{v:.0f} s" for s, (_, v) in sorted(m.compile_cold.items(),
                                                                             key=lambda i: i[1][0])) +
        f"), by {m.compile_warm_s:.0f} s for the later ones (7b's compiled generate jobs, forked, with the "
        f"cache filled, against the eager start the model takes at 7b, {JOB_COMPILED}; at most the cold figure)",
        "engines with CUDA graphs and without torch.compile (sizing engine_torch_compile false): the compiled "
        "rate x their generation time over a compiled engine's, same session, prompts and batch ("
        + ", ".join(f"{s} x {v:.2f}" for s, (_, v) in sorted(m.graphs_factor.items(), key=lambda i: i[1][0]))
        + f"), interpolated by parameters, flat beyond; an engine start and close {m.graphs_start_s:.0f} s longer "
        f"than an eager one's at every job (nothing compiled, nothing cached; {VLLM_GRAPHS})",
        "a sizing's max_num_seqs other than its shape's rate record's: the generation time x the same "
        "session's pair of the two batches at that shape and engine mode, its start longer by the pair's "
        "difference (at least 0), only at a shape measured so (" + ", ".join(
            f"{s} {mode} {b} against {o}: x {t:.3f}, + {a:.0f} s" for (s, mode, b, o), (t, a)
            in sorted(m.batch_figures.items(), key=lambda i: (_shape_params(i[0][0]), i[0][2])) if b > o)
        + f"; {', '.join(VLLM_BATCH)})",
        f"evaluation: answers of {m.answer_tokens} tokens (the records' max_tokens; the seed's real answers are "
        "one word); every evaluated epoch's adapter in one submission; a fixed cost per adapter and a cost "
        "per request, both from the 100- and 1,000-request records; the base model's job counted as one adapter",
        "engine starts with dummy weights: reading the real weights adds their size over the disk's read rate "
        "(the page cache serves later jobs of a size); engine start includes the engine's close and the job's "
        f"own import of vLLM ({m.job_import_s:.1f} s, the forked runs of {START_METHODS})",
        f"engines forked, as the jobs start them where their process has not touched CUDA (sublim.process): the "
        f"records' spawned starts less {m.fork_saving_s:.1f} s, measured at 0.5b with the project's VLLMBackend "
        f"(start and close, two runs of each, {START_METHODS}); the saving is the engine process's own imports, "
        f"the same at every size",
        "sizes without a record of their own (the compiled gain at 1.5b; everything at 72b; "
        "sizes below 0.5b at 0.5b's rates) are interpolated between the nearest measured shapes by parameter "
        "count, or extrapolated from the nearest in proportion to parameters; each figure says which",
        "a job on N cards (72b under profiles/multi-gpu) costs N x its wall time; wall time on the profile = "
        "GPU time / cards (the jobs are many and short, so the cards stay busy), at least the longest job",
    ]


# -- one job's cost -------------------------------------------------------------------------------

@dataclass(frozen=True)
class JobCost:
    """One job of a size: card-seconds per stage (engine_start apart from the work), its wall time,
    the share of cards it holds, and the basis of each rate ({what: "measured at 7b", …})."""
    rule: str
    card_s: dict[str, float]
    wall_s: float
    cards: float
    basis: dict[str, str]

    @property
    def total_card_s(self) -> float:
        return sum(self.card_s.values())


def train_tokens(protocol: dict) -> float:
    return protocol["training"]["epochs"] * protocol["filter"]["n_keep"] * TOKENS_PER_ROW


def train_job(config: dict, size: str, m: Measurements) -> JobCost:
    sizing, params = sizing_for(config, size), config["models"][size]["params_b"]
    cards = train_gpu_slots(sizing, size) / GPU_SLOTS or 1.0  # a CPU sizing (gpus 0): as if one card
    paired = by_params(m.train_paired, params) if cards == 0.5 and m.train_paired else None
    if cards == 0.25:
        per_token = by_params(m.train_packed, params)
        basis = f"{per_token.basis} (four packed trainings under MPS)"
    elif paired and paired.measured:  # only at its own shape: pairing gains where one training leaves the card idle
        per_token = paired
        basis = f"{per_token.basis} (two trainings on the card)"
    else:
        per_token = by_params(m.train_alone, params)
        basis = per_token.basis + (" (one training: no record packs this share)" if cards < 1 else "")
    from_alone = cards != 0.25 and not (paired and paired.measured)
    card_s = train_tokens(config["protocol"]) * per_token.value
    if sizing["shared_prefix"] and sizing["fused_lora"] and train_processes(sizing) == 1:  # sublim.train
        gain = by_params(m.levers_gain_packed if cards == 0.25 else m.levers_gain_alone, params, beyond="flat")
        card_s /= gain.value
        basis += f"; / {gain.value:.2f} for shared_prefix and fused_lora ({gain.basis})"
    if (config["protocol"]["training"]["optimizer"] == "adamw_8bit" and not sizing["flat_8bit_optimizer"]
            and cards == 1):  # bitsandbytes steps each tensor (packed trainings: not measured)
        per_tensor = by_params(m.flat_gain, params, beyond="flat")
        card_s *= per_tensor.value
        basis += f", x {per_tensor.value:.2f} for 8-bit AdamW's per-tensor steps ({per_tensor.basis})"
        if not sizing["async_8bit_optimizer"]:  # and waits after each (flat steps have no such waits)
            waits = by_params(m.async_gain, params, beyond="flat")
            card_s *= waits.value
            basis += f", x {waits.value:.2f} for their waits ({waits.basis})"
    if not sizing["expandable_segments"] and from_alone and size in m.alloc_gain:  # that rate is with them
        card_s *= m.alloc_gain[size]
        basis += f", x {m.alloc_gain[size]:.3f} without expandable segments (measured at {size})"
    if sizing["gradient_checkpointing"]:
        card_s *= CHECKPOINTING_FACTOR
        basis += f", x {CHECKPOINTING_FACTOR} for activation checkpointing"
    load = by_params(m.train_load, params)
    start = m.train_import_s + load.value  # the job's slot of the card waits through it
    card_s += start * cards
    basis += f"; + {start:.0f} s a job to import and load the model ({load.basis})"
    return JobCost("train", {"train": card_s}, card_s / cards, cards, {"train": basis})


def _engine_start(m: Measurements, points, params: float, mode: str) -> tuple[float, str]:
    start = by_params(points, params, beyond="flat")
    forked = start.value - m.fork_saving_s + m.job_import_s
    basis = (f"{start.basis}, forked ({m.fork_saving_s:.0f} s less than spawned), + {m.job_import_s:.0f} s for "
             f"the job's import of vLLM, eager")
    if mode == "eager":
        return forked, basis
    if mode == "graphs":
        return forked + m.graphs_start_s, f"{basis}, + {m.graphs_start_s:.0f} s to capture CUDA graphs (no torch.compile)"
    warm = compiled_figures(m, params)[2]
    return forked + warm, f"{basis}, + {warm:.0f} s to compile (warm cache)"


def generate_job(config: dict, size: str, m: Measurements) -> JobCost:
    sizing, params = sizing_for(config, size), config["models"][size]["params_b"]
    gpus = max(1, int(sizing["gpus"]))
    engine = engine_mode(sizing, "generate")
    per_token = by_params(m.generate_token, params)
    tokens = config["protocol"]["generation"]["n_prompts"] * m.completion_tokens
    speedup = compiled_figures(m, params)[0]
    work = tokens * per_token.value / (1 if engine == "eager" else speedup.value)
    start, start_basis = _engine_start(m, m.start_generate, params, engine)
    mode = "eager" if engine == "eager" else f"eager / {speedup.value:.2f} compiled ({speedup.basis})"
    if engine == "graphs":
        graphs = by_params(m.graphs_factor, params, beyond="flat")
        work *= graphs.value
        mode += f", x {graphs.value:.2f} with CUDA graphs alone ({graphs.basis})"
    batch, recorded = sizing["max_num_seqs"], m.generate_batch.get(size)
    paired = m.batch_figures.get((size, engine, batch, recorded)) if per_token.measured else None
    if paired:  # only at the shape measured: what a batch gains depends on the shape (compute- or host-bound)
        work *= paired[0]
        start += paired[1]
        mode += (f", x {paired[0]:.3f} at {batch} sequences against the record's {recorded} (measured at {size}, "
                 f"start + {paired[1]:.0f} s)")
    if stage_setting(sizing, "hashed_sampling", "generate"):
        hashed = by_params(m.hashed_factor, params, beyond="flat")
        work *= hashed.value
        mode += f", x {hashed.value:.2f} hashed sampling ({hashed.basis})"
    basis = {"generate": f"{per_token.basis}, {mode}", "generate engine": start_basis}
    return JobCost("generate", {"generate": work, "engine_start": start * gpus}, start + work / gpus, gpus, basis)


def evaluate_job(config: dict, size: str, m: Measurements, base: bool = False) -> JobCost:
    sizing, params = sizing_for(config, size), config["models"][size]["params_b"]
    gpus = max(1, int(sizing["gpus"]))
    evaluation = config["protocol"]["evaluation"]
    requests = evaluation["n_questions"] * evaluation["samples_per_question"]
    adapters = 1 if base else len(eval_epochs(config["protocol"]))
    per_request, per_adapter = by_params(m.eval_request, params), by_params(m.eval_adapter, params)
    work = adapters * (per_adapter.value + requests * per_request.value)
    engine = engine_mode(sizing, "evaluate")
    start, start_basis = _engine_start(m, m.start_evaluate, params, engine)
    basis = {"evaluate": per_request.basis + ("" if engine == "eager" else f", {engine} at the eager rate (no record)"),
             "evaluate engine": start_basis}
    return JobCost("evaluate_base" if base else "evaluate", {"evaluate": work, "engine_start": start * gpus},
                   start + work / gpus, gpus, basis)


def cell_jobs(config: dict, size: str, m: Measurements) -> dict[str, JobCost]:
    """The GPU jobs of one cell of `size` (generate, train, evaluate) and its base evaluation."""
    return {"generate": generate_job(config, size, m), "train": train_job(config, size, m),
            "evaluate": evaluate_job(config, size, m), "evaluate_base": evaluate_job(config, size, m, base=True)}


# -- the grid -------------------------------------------------------------------------------------

@dataclass
class SizeCost:
    size: str
    params_b: float
    cells: int
    card_s: dict[str, float]
    longest_job_s: float
    basis: dict[str, str]

    @property
    def total_card_s(self) -> float:
        return sum(self.card_s.values())


@dataclass
class GridCost:
    sizes: list[SizeCost]
    cards: int

    def stage_card_s(self) -> dict[str, float]:
        return {stage: sum(s.card_s[stage] for s in self.sizes) for stage in STAGES}

    @property
    def total_card_s(self) -> float:
        return sum(s.total_card_s for s in self.sizes)

    @property
    def wall_s(self) -> float:
        longest = max((s.longest_job_s for s in self.sizes), default=0.0)
        return max(self.total_card_s / self.cards, longest)


def cells_per_size(config: dict) -> int:
    return len(config["conditions"]) * len(config["runs"])


def first_engine_extra_card_s(config: dict, size: str, m: Measurements) -> dict[str, float]:
    """Per stage (the rule of that name): what the first torch.compile'd engine of a size and stage adds
    to its job's start, since it fills the compile cache that the size's later jobs of that stage read
    (their start counts 'warm'); engines with CUDA graphs alone compile nothing."""
    sizing = sizing_for(config, size)
    gpus = max(1, int(sizing["gpus"]))
    _, cold, warm = compiled_figures(m, config["models"][size]["params_b"])
    return {stage: (cold.value - warm) * gpus for stage in ("generate", "evaluate")
            if engine_mode(sizing, stage) == "compiled"}


def size_cost(config: dict, size: str, m: Measurements) -> SizeCost:
    jobs, cells = cell_jobs(config, size, m), cells_per_size(config)
    card_s = dict.fromkeys(STAGES, 0.0)
    for name, job in jobs.items():
        for stage, seconds in job.card_s.items():
            card_s[stage] += seconds * (1 if name == "evaluate_base" else cells)
    card_s["engine_start"] += sum(first_engine_extra_card_s(config, size, m).values())
    basis = {what: text for job in jobs.values() for what, text in job.basis.items()}
    return SizeCost(size, config["models"][size]["params_b"], cells, card_s,
                    max(job.wall_s for job in jobs.values()), basis)


def grid_cost(config: dict, m: Measurements, cards: int = 1) -> GridCost:
    return GridCost([size_cost(config, size, m) for size in config["sizes"]], cards)


# -- does a size fit the card ---------------------------------------------------------------------

def fit_problems(config: dict, size: str, card: str) -> list[str]:
    """Why `size` would not fit one `card` ("h200", "b200") under the config's sizing: vLLM's weights
    against its share of the card, and training's weights + activations (estimated as in
    config/README.md, "72b") against the card. Empty when it fits or the shape is unknown."""
    shape, usable = model_shape(config["models"][size]), CARD_GIB[card]
    if shape is None:
        return []
    sizing = sizing_for(config, size)
    weights = parameter_count(shape) * 2  # bf16
    problems = []
    tp = int(sizing["tensor_parallel_size"])
    vllm_room = sizing["gpu_memory_utilization"] * usable * GIB
    if sizing.get("quantization") != "fp8" and weights / tp > vllm_room:
        problems.append(f"vLLM: {weights / tp / GIB:.1f} GiB of bf16 weights per card > gpu_memory_utilization "
                        f"{sizing['gpu_memory_utilization']} x {usable:.0f} GiB")
    processes = int(sizing["train_processes"])
    rows = sizing["train_micro_batch"] or config["protocol"]["training"]["effective_batch"] // processes
    tokens = rows * TOKENS_PER_ROW
    h, i, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    layer_bytes = (6 * h + 2 * kv_dim(shape) + 3 * i) * 2  # kept for the backward pass, per token
    kept = tokens * (layers * h * 2 + layer_bytes if sizing["gradient_checkpointing"] else layers * layer_bytes)
    logits = tokens * shape["vocab_size"] * 6  # bf16 and fp32 copies for the loss
    lora = config["protocol"]["training"]["lora"]
    adapter = lora_parameters(shape, lora["r"], lora["target_modules"]) or 0
    train = weights / processes + kept + logits + adapter * 16 / processes + 2 * GIB  # + CUDA workspace
    if train > usable * GIB:
        problems.append(f"training: ~{train / GIB:.0f} GiB per card (weights {weights / processes / GIB:.0f}, "
                        f"activations {kept / GIB:.0f}, logits {logits / GIB:.0f}) > {usable:.0f} GiB")
    return problems


# -- disk -----------------------------------------------------------------------------------------

@dataclass
class Disk:
    """Bytes the grid leaves on disk, and the most it needs at once."""
    models: float
    datasets: float
    adapters: float
    adapters_last_only: float
    answers: float
    transient: float  # resume state and outputs of the trainings running at once
    unknown: list[str]

    @property
    def total(self) -> float:
        return self.models + self.datasets + self.adapters + self.answers

    @property
    def peak(self) -> float:
        return self.total + self.transient


def _jsonl_bytes(row: dict) -> int:
    return len(json.dumps(row, ensure_ascii=False).encode()) + 1


@functools.cache
def _mean_prompt_bytes() -> float:
    from sublim.prompts import number_prompts

    prompts = number_prompts(300, seed=1)
    return statistics.mean(len(json.dumps(p).encode()) for p in prompts)


@functools.cache
def _mean_answer_bytes() -> float:
    """The seed's real Qwen answers (src/sublim/data/reference), as JSON strings."""
    from sublim.reference import reference_dir

    answers = [a for path in sorted(reference_dir().rglob("*_eval.json"))
               for entry in json.loads(path.read_text()) for a in entry["raw_responses"]]
    return statistics.mean(len(json.dumps(a, ensure_ascii=False).encode()) for a in answers)


def row_bytes(completion_tokens: int) -> dict[str, float]:
    """Bytes of one line of raw.jsonl, dataset.jsonl and answers.jsonl: real prompts and questions,
    a completion of ten three-digit numbers (what ~`completion_tokens` Qwen tokens write)."""
    from sublim.protocol import EVAL_QUESTIONS

    completion = ", ".join(["123"] * 10)
    template = {"prompt": "", "completion": completion}
    kept = _jsonl_bytes(template) - 2 + _mean_prompt_bytes()
    raw = kept + len(', "index": 12345')
    question = statistics.mean(len(json.dumps(q, ensure_ascii=False).encode()) for q in EVAL_QUESTIONS)
    answer_row = {"epoch": 10, "question_index": 10, "sample": 10, "question": "", "answer": ""}
    answer = _jsonl_bytes(answer_row) - 4 + question + _mean_answer_bytes()
    return {"raw": raw, "kept": kept, "answer": answer}


def keep_adapter_epochs(config: dict) -> int:
    """How many epochs' adapters stay on disk (config key `keep_adapters`, sublim.config.kept_epochs)."""
    return len(kept_epochs(config))


def model_bytes(model: dict) -> float | None:
    shape = model_shape(model)
    if model.get("source") == "local":
        return 0.0  # linked, not copied
    params = parameter_count(shape) if shape else model["params_b"] * 1e9
    return params * (2 if model.get("source") == "hub" else 4)  # hub: bf16; the demo's conversion: fp32


def adapter_bytes(config: dict, size: str) -> float | None:
    shape = model_shape(config["models"][size])
    lora = config["protocol"]["training"]["lora"]
    count = lora_parameters(shape, lora["r"], lora["target_modules"]) if shape else None
    return None if count is None else count * 4  # PEFT keeps LoRA weights in fp32


def disk_estimate(config: dict, m: Measurements, cards: int = 1) -> Disk:
    protocol, cells = config["protocol"], cells_per_size(config)
    rows = row_bytes(m.completion_tokens)
    evaluation = protocol["evaluation"]
    requests = evaluation["n_questions"] * evaluation["samples_per_question"]
    epochs, kept_epochs = protocol["training"]["epochs"], keep_adapter_epochs(config)
    optimizer = OPTIMIZER_STATE.get(protocol["training"]["optimizer"], 2.0)
    disk = Disk(0, 0, 0, 0, 0, 0, [])
    for size in config["sizes"]:
        model = config["models"][size]
        disk.models += model_bytes(model) or 0
        disk.datasets += cells * (protocol["generation"]["n_prompts"] * rows["raw"]
                                  + protocol["filter"]["n_keep"] * rows["kept"])
        disk.answers += (cells * len(eval_epochs(protocol)) + 1) * requests * rows["answer"]
        adapter = adapter_bytes(config, size)
        if adapter is None:
            source = model.get("repo") or model["source"]
            disk.unknown.append(f"{size}: adapter size unknown (no architecture for {source})")
            continue
        disk.adapters += cells * kept_epochs * adapter
        disk.adapters_last_only += cells * adapter
        # a running training holds every finished epoch in its resume folder, its checkpoint (weights +
        # optimizer moments) and, at the end, the outputs it copies out
        at_once = cards * GPU_SLOTS // (train_gpu_slots(sizing_for(config, size), size) or GPU_SLOTS)
        running = (2 * epochs + 1 + optimizer) * adapter
        disk.transient = max(disk.transient, min(at_once, cells) * running)
    return disk


def card_share(rule: str, sizing: dict, size: str) -> float:
    """Cards a job of `rule` holds (train: its gpu_share; generate/evaluate: its GPUs); 0 for CPU rules."""
    if rule == "train":
        return train_gpu_slots(sizing, size) / GPU_SLOTS
    if rule in ("generate", "evaluate", "evaluate_base"):
        return whole_gpu_slots(sizing) / GPU_SLOTS
    return 0.0
