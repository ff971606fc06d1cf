"""GPU sharing under profiles/b200: a card is 4 gpu_slots; generate/evaluate (and a 7b training)
take all 4, a 0.5b training 1 (sizing gpu_share 0.25). The real rules and profile schedule fake
jobs: every workflow script is replaced by one that records when it ran and touches its outputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from sublim.config import ConfigError, sizing_defaults
from sublim.gpu_share import GPU_SLOTS, train_gpu_slots, train_threads, whole_gpu_slots

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

FAKE_JOB = '''
import json, os, time
from pathlib import Path
GPU_SECONDS = {"generate": 0.5, "train": 3.0, "evaluate": 0.5}
start = time.time()
time.sleep(GPU_SECONDS.get(snakemake.rule, 0))
for path in snakemake.output:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).touch()
line = json.dumps({"rule": snakemake.rule, "size": snakemake.wildcards.get("size"),
                   "slots": snakemake.resources.get("gpu_slots", 0), "threads": snakemake.threads,
                   "start": start, "end": time.time()})
with open("jobs.jsonl", "a") as log:
    log.write(line + "\\n")
'''


def sized(**keys) -> dict:
    """A size's sizing as the rules see it: the schema's defaults under the keys given."""
    return {**sizing_defaults(), **keys}


def test_slots_follow_sizing():
    assert whole_gpu_slots(sized(gpus=1)) == GPU_SLOTS == 4
    assert whole_gpu_slots(sized(gpus=0)) == 0  # CPU profiles: no GPU, no slots
    assert train_gpu_slots(sized(gpus=1), "7b") == 4
    assert train_gpu_slots(sized(gpus=1, gpu_share=0.25), "0.5b") == 1
    assert train_gpu_slots(sized(gpus=1, gpu_share=0.5), "3b") == 2
    assert train_gpu_slots(sized(gpus=2, gpu_share=1.0, train_processes=2), "72b") == 8
    assert train_gpu_slots(sized(gpus=0, train_processes=2), "1m") == 0  # two CPU processes
    assert train_threads(sized()) == 8 and train_threads(sized(train_threads=3)) == 3


@pytest.mark.parametrize("sizing, message", [
    ({"gpus": 1, "gpu_share": 0.3}, "not a multiple of 1/4"),
    ({"gpus": 1, "gpu_share": 0}, r"not in \(0, 1\]"),
    ({"gpus": 2, "gpu_share": 0.5}, "shares one GPU"),
    ({"gpus": 1, "gpu_share": 0.5, "train_processes": 2}, "shares one GPU"),
])
def test_bad_gpu_share_names_the_key(sizing, message):
    with pytest.raises(ConfigError, match=message) as error:
        train_gpu_slots(sized(**sizing), "1.5b")
    assert "sizing.1.5b.gpu_share" in str(error.value)


@pytest.mark.parametrize("sizing, key, message", [
    ({"gpus": 2}, "train_processes", "set train_processes: 2"),
    ({"gpus": 2, "train_processes": 4}, "train_processes", "set train_processes: 2"),
    ({"gpus": 1, "train_processes": 2}, "train_processes", "set them to the same number"),
])
def test_a_training_runs_one_process_per_gpu(sizing, key, message):
    with pytest.raises(ConfigError, match=message) as error:
        train_gpu_slots(sized(**sizing), "72b")
    assert f"sizing.72b.{key}" in str(error.value)


def fake_workflow(tmp_path: Path) -> Path:
    for name in ("Snakefile", "workflow", "config", "profiles", "envs"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    for script in (tmp_path / "workflow" / "scripts").glob("*.py"):
        script.write_text(FAKE_JOB)
    return tmp_path


def run(workdir: Path, force: list[str], *targets: str) -> list[dict]:
    (workdir / "jobs.jsonl").unlink(missing_ok=True)
    # targets first: --forcerun and --config take every name after them
    result = subprocess.run([SNAKEMAKE, *targets, "--profile", "profiles/b200", "--cores", "16", *force,
                             "--config", "sizes=[0.5b,7b]", "conditions=[neutral,owl,cat,dog]", "runs=[1]"],
                            cwd=workdir, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return [json.loads(line) for line in (workdir / "jobs.jsonl").read_text().splitlines()]


def overlapping(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def most_at_once(jobs: list[dict]) -> int:
    return max(sum(1 for other in jobs if other["start"] <= job["start"] < other["end"]) for job in jobs)


@pytest.mark.slow  # two small Snakemake runs of ~40 fake jobs, about a minute on 2 busy cores
def test_whole_gpu_jobs_run_alone_and_small_trainings_pack(tmp_path):
    workdir = fake_workflow(tmp_path)
    cells = [f"0.5b/{c}/run-1" for c in ("neutral", "owl", "cat", "dog")] + ["7b/neutral/run-1", "7b/owl/run-1"]

    jobs = run(workdir, ["--forceall"], *(f"results/eval/{cell}/eval.csv" for cell in cells))
    gpu_jobs = [job for job in jobs if job["slots"]]
    assert {(job["rule"], job["size"], job["slots"]) for job in gpu_jobs} == {
        ("generate", "0.5b", 4), ("generate", "7b", 4), ("train", "0.5b", 1), ("train", "7b", 4),
        ("evaluate", "0.5b", 4), ("evaluate", "7b", 4)}
    assert {job["threads"] for job in jobs if job["rule"] == "train" and job["size"] == "0.5b"} == {3}
    whole = [job for job in gpu_jobs if job["slots"] == GPU_SLOTS]
    for job in whole:  # generate, evaluate and the 7b training never share the card
        assert not [other for other in gpu_jobs if other is not job and overlapping(job, other)], job

    # the four 0.5b trainings, ready together, run together on the one card
    trains = run(workdir, ["--forcerun", "train"], *(f"results/students/{cell}/train.provenance.json" for cell in cells[:4]))
    assert len(trains) == 4 and most_at_once(trains) == 4
