"""profiles/multi-gpu on a fake 4-GPU machine: the real rules, profile and allocator schedule fake
jobs. Every workflow script is replaced by one that claims its cards as the real scripts do
(sublim.devices.claim_gpus right after start), joins its card's MPS daemon where the sizing asks
for it (stand-in driver programs, tests/fake_gpu.py), records what it held and touches its outputs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from fake_gpu import daemon_starts, install_fakes

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
GPUS = ["0", "1", "2", "3"]

FAKE_JOB = '''
import json, os, sys, time
from pathlib import Path
from sublim import mps
from sublim.config import sizing_for
from sublim.devices import claim_gpus, claimed
GPU_SECONDS = {"generate": 1.0, "train": 2.0, "evaluate": 1.0, "evaluate_base": 1.0}
claim_gpus(snakemake.config, snakemake.resources, snakemake.log[0])
start = time.time()
mps_client = None
if snakemake.rule == "train" and mps.wanted(sizing_for(snakemake.config, snakemake.wildcards.size)):
    mps_client = mps.join(Path(os.environ["SUBLIM_MPS_DIR"]), probe=[sys.executable, "-c", "pass"],
                          device=claimed()[0]) is None
time.sleep(GPU_SECONDS.get(snakemake.rule, 0))
for path in snakemake.output:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).touch()
line = json.dumps({"rule": snakemake.rule, "size": snakemake.wildcards.get("size"),
                   "gpu": snakemake.resources.get("gpu", 0), "slots": snakemake.resources.get("gpu_slots", 0),
                   "devices": claimed(), "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                   "mps_client": mps_client, "start": start, "end": time.time()})
with open("jobs.jsonl", "a") as log:
    log.write(line + "\\n")
'''


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A workflow copy whose scripts are fake jobs, on a machine with four fake GPUs."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    for name in ("Snakefile", "workflow", "config", "profiles", "envs"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, workdir / name)
    for script in (workdir / "workflow" / "scripts").glob("*.py"):
        script.write_text(FAKE_JOB)
    bin_dir = install_fakes(tmp_path / "bin")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_GPUS": " ".join(GPUS),
           "SUBLIM_GPU_LOCK_DIR": str(tmp_path / "locks"), "SUBLIM_MPS_DIR": str(tmp_path / "mps")}
    env.pop("CUDA_VISIBLE_DEVICES", None)  # `devices: auto` finds the cards with nvidia-smi
    return workdir, env, tmp_path


def run(workdir: Path, env: dict, *args: str) -> tuple[list[dict], str]:
    (workdir / "jobs.jsonl").unlink(missing_ok=True)
    result = subprocess.run([SNAKEMAKE, *args, "--profile", "profiles/multi-gpu", "--forceall",
                             "--config", "sizes=[0.5b,7b,72b]", "conditions=[neutral,owl,cat,dog]", "runs=[1]"],
                            cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    jobs = [json.loads(line) for line in (workdir / "jobs.jsonl").read_text().splitlines()]
    log = max((workdir / ".snakemake" / "log").glob("*.snakemake.log")).read_text()
    (budget,) = re.findall(r"^Provided resources: .*gpu_slots\D*(\d+)", log, re.M)
    return jobs, int(budget)


def overlapping(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def slots_in_use(jobs: list[dict], device: str, at: float) -> int:
    return sum(min(job["slots"], 4) for job in jobs
               if job["devices"] and device in job["devices"] and job["start"] <= at < job["end"])


@pytest.mark.slow  # one Snakemake run of ~50 fake jobs, about a minute on 2 busy cores
def test_every_gpu_job_gets_its_own_cards_and_small_trainings_pack_under_their_cards_mps(machine):
    workdir, env, tmp_path = machine
    cells = [f"0.5b/{c}/run-1" for c in ("neutral", "owl", "cat", "dog")] + ["7b/owl/run-1", "72b/owl/run-1"]
    jobs, budget = run(workdir, env, *(f"results/eval/{cell}/eval.csv" for cell in cells), "-j", "16")
    assert budget == 16  # 4 gpu_slots for each of the 4 cards nvidia-smi lists

    gpu_jobs = [job for job in jobs if job["gpu"]]
    assert {job["rule"] for job in gpu_jobs} == {"generate", "train", "evaluate"}
    for job in gpu_jobs:  # the cards it claimed are the only ones it saw (an MPS client: by UUID)
        assert len(job["devices"]) == job["gpu"] == len(set(job["devices"])), job
        seen = f"GPU-fake-{job['devices'][0]}" if job["mps_client"] else ",".join(job["devices"])
        assert job["visible"] == seen, job
    assert all(job["devices"] is None for job in jobs if not job["gpu"])  # CPU jobs claim nothing
    # tensor parallel (vLLM) and the 2-process training of 72b: two distinct cards each
    assert {len(job["devices"]) for job in gpu_jobs if job["size"] == "72b"} == {2}

    # no card is ever overbooked: whole-card jobs alone on theirs, packed trainings 4 to a card
    for job in gpu_jobs:
        for device in job["devices"]:
            assert slots_in_use(gpu_jobs, device, job["start"]) <= 4, (device, job)
    for i, a in enumerate(gpu_jobs):
        for b in gpu_jobs[i + 1:]:
            if overlapping(a, b) and set(a["devices"]) & set(b["devices"]):
                assert a["slots"] < 4 and b["slots"] < 4, (a, b)  # only packed trainings share

    # the machine is used as N cards, not one: jobs ran on several cards, several at once
    assert len({device for job in gpu_jobs for device in job["devices"]}) >= 3
    assert any(overlapping(a, b) for i, a in enumerate(gpu_jobs) for b in gpu_jobs[i + 1:]
               if a["slots"] >= 4 and b["slots"] >= 4)

    # the 0.5b trainings share cards under MPS: one daemon per card they used, seeing only that card
    small = [job for job in gpu_jobs if job["rule"] == "train" and job["size"] == "0.5b"]
    assert len(small) == 4 and all(job["slots"] == 1 and job["mps_client"] for job in small)
    used = {job["devices"][0] for job in small}
    for device in used:
        assert daemon_starts(tmp_path / "mps" / f"gpu-{device}" / "pipe") == [f"GPU-fake-{device}"]
        assert not (tmp_path / "mps" / f"gpu-{device}" / "pipe" / "daemon").exists()  # stopped at the end
    assert not (tmp_path / "mps" / "pipe").exists()  # no machine-wide daemon


@pytest.mark.slow
def test_the_profile_takes_the_cards_it_is_given(machine):
    """CUDA_VISIBLE_DEVICES narrows `devices: auto`; -j1 still runs everything, one job at a time."""
    workdir, env, _ = machine
    jobs, budget = run(workdir, {**env, "CUDA_VISIBLE_DEVICES": "2,3"},
                       "results/numbers/72b/owl/run-1/raw.jsonl", "results/numbers/7b/owl/run-1/raw.jsonl", "-j", "1")
    assert budget == 8
    generates = {job["size"]: job["devices"] for job in jobs if job["rule"] == "generate"}
    assert sorted(generates["72b"]) == ["2", "3"] and generates["7b"][0] in ("2", "3")
