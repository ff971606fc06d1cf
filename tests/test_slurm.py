"""The cluster path: profiles/slurm asks SLURM for each job's resources by model size, and the demo
runs green end to end through a real single-node SLURM (scripts/slurm/up.sh, Debian slurm-wlm) with
the SLURM executor plugin. The end-to-end test installs SLURM with apt when it is missing (CI runs
as root on a fresh machine) and skips, saying why, only where that cannot work."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sublim.config import sizing_for

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline"}
# A stuck status loop ignores SIGTERM, so every SLURM-facing run is bounded by SIGKILL.
DEMO_LIMIT_S = 1500


def dry_run_jobs(profile: str, targets: list[str], env: dict | None = None) -> dict[str, list[str]]:
    """rule name -> the resource lines Snakemake would submit, from a dry run (no SLURM needed)."""
    result = subprocess.run([SNAKEMAKE, "--profile", profile, "-n", *targets], cwd=REPO,
                            env={**os.environ, **OFFLINE, **(env or {})}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs: dict[str, list[str]] = {}
    rule = None
    for line in result.stdout.splitlines():
        if match := re.match(r"^\s*(?:local)?rule (\w+):", line):  # indented inside a group
            rule = match.group(1)
        elif rule and line.strip().startswith("resources:"):
            jobs.setdefault(rule, []).append(line.strip())
    return jobs


def cluster_config() -> dict:
    """The sizing the slurm profile loads: its configfiles, merged in order as Snakemake does."""
    from snakemake.utils import update_config

    merged: dict = {}
    for name in yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())["configfiles"]:
        update_config(merged, yaml.safe_load((REPO / name).read_text()))
    return merged


def resources(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line.removeprefix("resources: ").split(", "))


def test_the_cluster_profile_sizes_each_job_by_model_size_and_takes_partition_from_the_env():
    jobs = dry_run_jobs("profiles/slurm", ["results/eval/72b/owl/run-1/eval.csv",
                                           "results/eval/0.5b/owl/run-1/eval.csv"],
                        env={"SBATCH_PARTITION": "gpu-long", "SBATCH_ACCOUNT": "lab42"})
    expected = {size: sizing_for(cluster_config(), size) for size in ("0.5b", "72b")}
    train = sorted((resources(line) for line in jobs["train"]), key=lambda r: int(r["mem_mb"]))
    for size, found in zip(("0.5b", "72b"), train):
        want = expected[size]
        assert (found["gpu"], found["cpus_per_task"], found["mem_mb"], found["runtime"]) == (
            str(want["gpus"]), str(want["cpus"]), str(want["mem_mb"]), str(want["runtime"])), size
    small = train[0]
    assert train[1]["cpus_per_task"] == "16" and small["cpus_per_task"] == "8"
    assert small["slurm_partition"] == "gpu-long" and small["slurm_account"] == "lab42"
    # downloading a model needs no GPU-sized memory, whatever the size
    assert [resources(line)["mem_mb"] for line in jobs["prepare_model"]] == ["8000", "8000"]
    # the filter step rides in its cell's train job instead of queueing for an allocation
    profile = (REPO / "profiles/slurm/config.yaml").read_text()
    assert "filter: student" in profile and "train: student" in profile


def test_a_resubmitted_job_asks_for_twice_the_memory_and_time():
    target = ["results/numbers/0.5b/owl/run-1/raw.jsonl"]
    (first,) = dry_run_jobs("profiles/slurm", target)["generate"]
    (second,) = dry_run_jobs("profiles/slurm", ["--attempt", "2", *target])["generate"]
    first, second = resources(first), resources(second)
    assert int(second["mem_mb"]) == 2 * int(first["mem_mb"])
    assert int(second["runtime"]) == 2 * int(first["runtime"])
    assert "restart-times: 1" in (REPO / "profiles/slurm/config.yaml").read_text()


def test_unset_partition_and_account_leave_the_choice_to_the_cluster():
    env = {k: v for k, v in os.environ.items() if k not in ("SBATCH_PARTITION", "SBATCH_ACCOUNT")}
    result = subprocess.run([SNAKEMAKE, "--profile", "profiles/slurm", "-n",
                             "results/numbers/0.5b/owl/run-1/raw.jsonl"], cwd=REPO,
                            env={**env, **OFFLINE}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(l for l in result.stdout.splitlines() if l.strip().startswith("resources:"))
    found = resources(line.strip())
    # empty: the plugin then passes no -p/-A and sbatch uses the cluster's defaults
    assert found["slurm_partition"] == "" and found["slurm_account"] == ""


def slurm_up() -> None:
    """Start (or confirm) the local cluster; skip only when it cannot be had on this machine."""
    if os.geteuid() != 0 and not shutil.which("sinfo"):
        pytest.skip("the local SLURM needs root to install and start (CI runs as root)")
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        pytest.skip("SLURM is not installed and there is no apt-get to install slurm-wlm")
    result = subprocess.run(["timeout", "-s", "KILL", "900", "bash", str(REPO / "scripts/slurm/up.sh")],
                            capture_output=True, text=True)
    if result.returncode and "apt-get update failed" in result.stderr:
        pytest.skip(f"apt is unreachable, so slurm-wlm cannot be installed: {result.stderr.strip()}")
    assert result.returncode == 0, result.stdout + result.stderr


def copy_workflow(root: Path) -> Path:
    for name in ("Snakefile",):
        shutil.copy2(REPO / name, root / name)
    for folder in ("workflow", "config", "envs", "profiles"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.mark.slow
def test_the_demo_runs_green_through_a_real_slurm_cluster(tmp_path):
    slurm_up()
    workdir = copy_workflow(tmp_path)
    result = subprocess.run(["timeout", "-s", "KILL", str(DEMO_LIMIT_S), SNAKEMAKE,
                             "--profile", "profiles/slurm-local"], cwd=workdir,
                            env={**os.environ, **OFFLINE}, capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    for table in ("results/eval/135m/owl/run-1/eval.csv", "results/eval/135m/neutral/run-1/eval.csv",
                  "results/eval/135m/base/eval.csv", "results/tables/preferences.csv"):
        assert (workdir / table).stat().st_size > 0, table
    # every job went through sbatch (the plugin deletes a successful job's SLURM log, so the
    # submissions are read from Snakemake's own output)
    submitted = re.findall(r"submitted with SLURM jobid \d+ \(log: .*?/slurm_logs/(\w+?)/", output)
    assert {"rule_prepare_model", "rule_generate", "group_student_filter_train", "rule_evaluate",
            "rule_report"} <= set(submitted), output[-3000:]
