"""Upgrading keeps old results: a tiny grid finished by the layout before the score stage (commit
OLD_LAYOUT, taken from git), then the current code put in its place as a `git pull` would. Snakemake
plans the GPU jobs again (their params and inputs changed); README.md's commands ("Upgrading a results
tree made before the score stage or before the model records") make that nothing, keep every file, and
later changes still rerun. The same commands serve trees made after the score stage and before the
model records: theirs is the model record's part of the change."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest
import yaml

import tiny_workflow
from tiny_workflow import REPO, SIZE, copy_workflow, finish_grid, job_counts, make_workdir, run_snakemake, tiny_config

# The last commit whose GPU evaluate job also wrote eval.csv, with the animals and the scoring
# method among its params.
OLD_LAYOUT = "b356804"
GPU_RULES = {"prepare_model", "generate", "train", "evaluate", "evaluate_base"}
EVAL_TABLES = [f"results/eval/{SIZE}/owl/run-1/eval.csv", f"results/eval/{SIZE}/base/eval.csv"]


def checkout(commit: str, dest):
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit], capture_output=True)
    if archive.returncode:
        pytest.skip(f"commit {commit} is not in this checkout's history (a shallow clone?)")
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def fingerprints(workdir) -> dict[str, str]:
    return {str(path.relative_to(workdir)): hashlib.sha256(path.read_bytes()).hexdigest()
            for folder in ("results", "resources") for path in sorted((workdir / folder).rglob("*"))
            if path.is_file() and not path.is_symlink() and path.name != ".snakemake_timestamp"}


def plan(workdir) -> dict[str, int]:
    result = run_snakemake(workdir, [], ["-n", "--quiet", "rules"], triggers=None)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return job_counts(result.stdout)


pytestmark = pytest.mark.slow  # two tiny grids' worth of jobs, then dry runs


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory):
    """The old grid, finished by the old code, with the current code copied over it: the plan a
    dry run makes then, and the README's command run."""
    root = tmp_path_factory.mktemp("upgrade")
    old_code = checkout(OLD_LAYOUT, root / "old-code")
    config = tiny_config(tiny_workflow.tiny_model(), training={"epochs": 1})
    workdir = make_workdir(root / "grid", config, source=old_code)
    finish_grid(workdir, env={"PYTHONPATH": str(old_code / "src")})  # the old library, too
    before = fingerprints(workdir)
    for name in tiny_workflow.WORKFLOW_FILES:  # what the new checkout no longer has goes
        path = workdir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    copy_workflow(workdir, copy=shutil.copy)  # fresh mtimes, as a pull writes them
    (workdir / "config" / "test.yaml").write_text(yaml.safe_dump(config))
    planned = plan(workdir)
    for command in (["models"], ["--touch"]):  # README's commands, in its order
        done = run_snakemake(workdir, [], command, triggers=None)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return workdir, before, planned


def test_without_the_commands_the_gpu_jobs_would_run_again(upgraded):
    # What Snakemake 9.27 plans: generate's params lost the filter's n_keep, evaluate's the animals
    # and the scoring method, and the jobs that load the model depend on its record, not on its
    # folder, so each job reruns ("Params have changed", "Set of input files has changed"), and
    # everything below it with it; the model's record does not exist yet.
    _, _, planned = upgraded
    assert GPU_RULES <= planned.keys()


# outputs the old layout never had: the seed's reference, power.csv, scaling_trend.csv (CPU, seconds)
NEW_REPORT_JOBS = {"reference_seed": 1, "power": 1, "report": 1}


def test_after_the_commands_nothing_reruns_no_file_changed_and_a_change_still_reruns(upgraded):
    workdir, before, _ = upgraded
    # the commands create no result: only the report stage's new outputs remain to be made (CPU)
    assert plan(workdir) == {**NEW_REPORT_JOBS, "all": 1, "total": 4}
    after = fingerprints(workdir)
    assert {path: after.get(path) for path in before} == before  # not a byte of any result changed
    assert {path for path in after if path not in before} <= {  # new: the model's record and identity
        *(str(p.relative_to(workdir)) for p in (workdir / "results" / "models").rglob("*") if p.is_file()),
        f"resources/models/{SIZE}/sublim-model.json"}
    # the params on record are the new ones: a change reruns what reads it, and only that
    changed = yaml.safe_load((workdir / "config" / "test.yaml").read_text())
    changed["protocol"]["evaluation"]["samples_per_question"] = 2
    (workdir / "config" / "changed.yaml").write_text(yaml.safe_dump(changed))
    result = run_snakemake(workdir, [], ["-n", "--quiet", "rules"], triggers=None, configfile="config/changed.yaml")
    assert job_counts(result.stdout) == {"evaluate": 1, "evaluate_base": 1, "score": 1, "score_base": 1,
                                         **NEW_REPORT_JOBS, "all": 1, "total": 8}


def test_the_score_stage_writes_the_old_eval_csv_byte_for_byte(upgraded):
    # last in this file: it rewrites the tables
    workdir, _, _ = upgraded
    old = {table: (workdir / table).read_bytes() for table in EVAL_TABLES}
    rescored = run_snakemake(workdir, EVAL_TABLES, ["--forcerun", "score", "score_base"], triggers=None)
    assert rescored.returncode == 0, rescored.stdout[-3000:] + rescored.stderr[-3000:]
    assert {table: (workdir / table).read_bytes() for table in EVAL_TABLES} == old
