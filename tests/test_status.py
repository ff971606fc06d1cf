"""`make status` (sublim.status): progress read from Snakemake's own records — on a fabricated tree
(nothing run yet, a GPU grid part done with a failure and a running job) and on a real tiny grid
run with one failed job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sublim import cost, status
from sublim.profiles import load_config

from conftest import REPO

RECORDS = REPO / "benchmarks" / "results"

# What Snakemake 9.27 writes into .snakemake/log/<time>.snakemake.log (tests/test_status.py's slow test
# checks the parser on a real one)
RUN_LOG = """\
Building DAG of jobs...
[Tue Dec  1 10:00:00 2026]
rule train:
    input: resources/models/7b, results/numbers/7b/eagle/run-2/dataset.jsonl
    output: results/students/7b/eagle/run-2/epoch-1/adapter_model.safetensors
    log: logs/train/7b/eagle/run-2.log
    jobid: 12
    benchmark: benchmarks/runs/train/7b/eagle/run-2.tsv
    reason: Missing output files: results/students/7b/eagle/run-2/epoch-1/adapter_model.safetensors
    wildcards: size=7b, condition=eagle, run=2
    threads: 8
    resources: tmpdir=/tmp, gpu=1, gpu_slots=4
RuleException:
CalledProcessError in file "workflow/rules/train.smk", line 38:
[Tue Dec  1 10:05:00 2026]
Error in rule train:
    message: None
    jobid: 12
    output: results/students/7b/eagle/run-2/epoch-1/adapter_model.safetensors
    log: logs/train/7b/eagle/run-2.log (check log file(s) for error details)
Trying to restart job 12.
[Tue Dec  1 10:05:01 2026]
rule train:
    log: logs/train/7b/eagle/run-2.log
    jobid: 12
    wildcards: size=7b, condition=eagle, run=2
[Tue Dec  1 10:09:00 2026]
Error in rule train:
    jobid: 12
    log: logs/train/7b/eagle/run-2.log (check log file(s) for error details)
[Tue Dec  1 10:10:00 2026]
rule generate:
    log: logs/generate/14b/cat/run-1.log
    jobid: 3
    wildcards: size=14b, condition=cat, run=1
[Tue Dec  1 10:10:05 2026]
localrule filter:
    jobid: 4
    wildcards: size=0.5b, condition=owl, run=1
[Tue Dec  1 10:10:06 2026]
Finished jobid: 4 (Rule: filter)
"""


@pytest.fixture(scope="module")
def grid():
    return load_config("profiles/b200", root=REPO)


@pytest.fixture(scope="module")
def m():
    return cost.load_measurements(RECORDS)


def benchmark(workdir: Path, rule_dir: str, rest: str, seconds: float) -> None:
    path = workdir / "benchmarks" / "runs" / rule_dir / f"{rest}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:00\t1.0\n")


def test_nothing_run_yet_says_so_and_projects_the_grid(tmp_path, grid, m):
    text = status.status_text(grid, status.read_state(tmp_path), m, 1, tmp_path, "here")
    assert "nothing has run yet: 1701 jobs planned" in text
    total = cost.grid_cost(grid, m).stage_card_s()
    assert f"{sum(total.values()) / 3600:,.1f} projected" in text
    assert "ETA on 1 card" in text


def test_a_part_done_grid_with_a_failure_and_a_running_job(tmp_path, grid, m):
    for condition in grid["conditions"]:
        benchmark(tmp_path, "generate", f"0.5b/{condition}/run-1", 100.0)
        benchmark(tmp_path, "train", f"0.5b/{condition}/run-1", 1000.0)
    benchmark(tmp_path, "filter", "0.5b/owl/run-1", 1.0)  # not a condition of the grid: left out
    benchmark(tmp_path, "evaluate", "0.5b/base", 40.0)
    benchmark(tmp_path, "prepare_model", "0.5b", 50.0)
    log_dir = tmp_path / ".snakemake" / "log"
    log_dir.mkdir(parents=True)
    (log_dir / "2026-12-01T100000.000000.snakemake.log").write_text(RUN_LOG)
    # a `snakemake --summary` beside the run logs no job
    (log_dir / "2026-12-01T102000.000000.snakemake.log").write_text("Building DAG of jobs...\n")
    (tmp_path / ".snakemake" / "locks").mkdir()
    (tmp_path / ".snakemake" / "locks" / "0.input.lock").write_text("x\n")
    job_log = tmp_path / "logs" / "train" / "7b" / "eagle" / "run-2.log"
    job_log.parent.mkdir(parents=True)
    job_log.write_text("step 10\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB\nexiting\n")

    state = status.read_state(tmp_path)
    assert state.snakemake_running
    assert [str(s.job) for s in state.failed] == ["train 7b eagle run 2"]
    assert [str(s.job) for s in state.running] == ["generate 14b cat run 1"]  # filter 0.5b owl finished
    now = time.mktime(time.strptime("Tue Dec  1 10:30:00 2026", "%a %b %d %H:%M:%S %Y"))
    text = status.status_text(grid, state, m, 1, tmp_path, "here", now=now)
    row = next(line.split() for line in text.splitlines() if line.strip().startswith("0.5b"))
    assert row[1:] == ["1/1", "16/48", "0/48", "16/48", "0/48", "0/48", "1/1", "0/1"]
    assert next(line for line in text.splitlines() if line.strip().startswith("7b")).split()[4] == "0/48!1"
    assert next(line for line in text.splitlines() if line.strip().startswith("14b")).split()[2] == "0/48+1"
    assert "generate 14b cat run 1 for 20 min — logs/generate/14b/cat/run-1.log" in text
    assert ("train 7b eagle run 2 — logs/train/7b/eagle/run-2.log: torch.OutOfMemoryError: CUDA out of memory. "
            "Tried to allocate 2 GiB") in text
    # packed 0.5b trainings hold a quarter card: 16 x 1000 s x 0.25; generate a whole one
    assert f"{16 * 1000 * 0.25 / 3600:,.1f} spent by 16 finished job(s)" in text
    projected = cost.cell_jobs(grid, "0.5b", m)["train"].total_card_s * 16
    assert f"against {projected / 3600:,.1f} projected (x{16 * 250 / projected:.2f})" in text


def test_a_killed_run_leaves_interrupted_jobs(tmp_path, grid, m):
    log_dir = tmp_path / ".snakemake" / "log"
    log_dir.mkdir(parents=True)
    (log_dir / "2026-12-01T100000.000000.snakemake.log").write_text(RUN_LOG)
    marker = tmp_path / ".snakemake" / "incomplete" / "cmVzdWx0cy9udW1iZXJz"
    marker.parent.mkdir(parents=True)
    marker.write_text("{}")
    text = status.status_text(grid, status.read_state(tmp_path), m, 1, tmp_path, "here")
    assert "1 output(s) are marked incomplete" in text
    assert "cut off when the last run stopped: generate 14b cat run 1" in text


@pytest.mark.slow
def test_status_of_a_real_tiny_grid_with_one_failed_job(tmp_path):
    """The tiny model's teacher writes no number list the filter keeps: cat's training fails on an
    empty dataset; owl gets teacher-like rows and trains."""
    import tiny_workflow as tw
    from sublim.provenance import file_digest

    config = tw.tiny_config(tw.tiny_model())
    config["conditions"] = ["owl", "cat"]
    workdir = tw.make_workdir(tmp_path / "wd", config, tw.tiny_model())
    args = [sys.executable, "-m", "sublim.status", "--directory", str(workdir), "--profile", "",
            "--configfile", "config/test.yaml", "--records", str(RECORDS)]
    env = {**os.environ, **tw.OFFLINE}
    before = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert before.returncode == 0, before.stderr
    assert "nothing has run yet: 13 jobs planned" in before.stdout

    raws = [f"results/numbers/{tw.SIZE}/{c}/run-1/raw.jsonl" for c in config["conditions"]]
    assert tw.run_snakemake(workdir, raws, triggers=None).returncode == 0
    raw = workdir / raws[0]
    stat = raw.stat()
    raw.write_text("".join(json.dumps(row) + "\n" for row in tw.number_rows(16, 1)))
    os.utime(raw, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    # as if the teacher had written them: its provenance records the file it wrote (sublim.provenance)
    provenance = raw.with_name("raw.provenance.json")
    record = json.loads(provenance.read_text())
    record["outputs"][raw.name] = file_digest(raw)
    provenance.write_text(json.dumps(record))
    trains = [f"results/students/{tw.SIZE}/{c}/run-1/train.provenance.json" for c in config["conditions"]]
    assert tw.run_snakemake(workdir, trains, ["-k"], triggers=None).returncode != 0

    after = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert after.returncode == 0, after.stderr
    row = next(line.split() for line in after.stdout.splitlines() if line.strip().startswith(tw.SIZE))
    assert row[1:] == ["0/1", "2/2", "2/2", "1/2!1", "0/2", "0/2", "0/1", "0/1"]
    assert (f"train {tw.SIZE} cat run 1 — logs/train/{tw.SIZE}/cat/run-1.log: ValueError: "
            f"results/numbers/{tw.SIZE}/cat/run-1/dataset.jsonl has no rows") in after.stdout
    assert "no Snakemake is running here" in after.stdout
    assert "ETA: ~" in after.stdout and "not yet timed: evaluate" in after.stdout
