"""What a change reruns on a finished grid: exactly the jobs that read the changed key and those
downstream of their outputs (README.md, "Change the grid"). One tiny grid (tests/tiny_workflow.py:
one size, the owl condition, one run, one epoch) is run to the end once, with Snakemake's default
rerun triggers; every test is then a dry run against it with one change."""

from __future__ import annotations

import os

import pandas as pd
import pytest
import yaml

import tiny_workflow
from sublim.protocol import ANIMALS
from tiny_workflow import SIZE, finish_grid, job_counts, make_workdir, run_snakemake, tiny_config

GPU_RULES = {"prepare_model", "generate", "train", "evaluate", "evaluate_base"}
# profiles/b200 and profiles/slurm: no `code` trigger
GPU_PROFILE_TRIGGERS = ("mtime", "params", "input", "software-env")


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    config = tiny_config(tiny_workflow.tiny_model(), training={"epochs": 1})
    workdir = make_workdir(tmp_path_factory.mktemp("grid"), config)
    finish_grid(workdir)
    return workdir


def plan(workdir, change=None, extra=(), triggers=None) -> dict[str, int]:
    """Jobs per rule a dry run plans with the test config changed by `change(config)`."""
    config = yaml.safe_load((workdir / "config" / "test.yaml").read_text())
    if change:
        change(config)
    (workdir / "config" / "changed.yaml").write_text(yaml.safe_dump(config))
    result = run_snakemake(workdir, [], ["-n", "--quiet", "rules", *extra], triggers=triggers,
                           configfile="config/changed.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    counts = job_counts(result.stdout)
    counts.pop("total", None)
    return counts


def test_a_finished_grid_has_nothing_to_do(grid):
    assert plan(grid) == {}


def test_a_new_condition_plans_its_cell_and_cpu_scoring_only(grid):
    counts = plan(grid, lambda c: c.update(conditions=["owl", "cat"]))
    # cat's own chain; the animals are the columns of every eval.csv, so each cell is re-scored
    # (owl, cat and the base model: CPU), the seed's reference re-scored for cat, and the report redone;
    # owl and the base ask no model again
    assert counts == {"generate": 1, "filter": 1, "train": 1, "evaluate": 1, "score": 2, "score_base": 1,
                      "reference_seed": 1, "report": 1, "all": 1}


def test_a_new_run_plans_its_cell_and_the_report_only(grid):
    # no new animal: the other cells' eval.csv stay as they are
    counts = plan(grid, lambda c: c.update(runs=[1, 2]))
    assert counts == {"generate": 1, "filter": 1, "train": 1, "evaluate": 1, "score": 1, "report": 1, "power": 1,
                      "all": 1}


def test_a_new_scoring_method_plans_no_gpu_job(grid):
    counts = plan(grid, lambda c: c["protocol"]["evaluation"].update(scoring="first_word"))
    assert not GPU_RULES & counts.keys()
    assert counts == {"score": 1, "score_base": 1, "reference_seed": 1, "report": 1, "all": 1}


def test_filter_n_keep_plans_no_generation(grid):
    counts = plan(grid, lambda c: c["protocol"]["filter"].update(n_keep=12))
    # the student learns from the kept rows: a new subsample retrains and re-evaluates it; the
    # untuned base model's evaluation does not depend on it
    assert counts == {"filter": 1, "train": 1, "evaluate": 1, "score": 1, "report": 1, "all": 1}


def test_evaluation_samples_plan_evaluation_and_what_follows_not_training(grid):
    counts = plan(grid, lambda c: c["protocol"]["evaluation"].update(samples_per_question=2))
    assert counts == {"evaluate": 1, "evaluate_base": 1, "score": 1, "score_base": 1, "report": 1, "power": 1,
                      "all": 1}


def test_the_parameter_count_plans_only_the_report(grid):
    # params_b is the scaling plot's x axis; the model rule and the jobs that load the model do
    # not read it
    counts = plan(grid, lambda c: c["models"][SIZE].update(params_b=0.002))
    assert counts == {"report": 1, "all": 1}


@pytest.mark.parametrize("sizing", [
    {"generate_batch_size": 8, "train_micro_batch": 2, "gradient_checkpointing": True},
    {"dtype": "float32", "mem_mb": 1000, "runtime": 5, "max_num_seqs": 8, "gpu_memory_utilization": 0.5},
])
def test_a_sizing_change_plans_nothing(grid, sizing):
    assert plan(grid, lambda c: c["sizing"]["default"].update(sizing)) == {}


def test_the_engine_plans_nothing_and_tracking_only_its_own_jobs(grid):
    assert plan(grid, lambda c: c.update(backend="auto")) == {}
    # wandb settings are read from the config by the jobs, not params: switching tracking on logs
    # the finished evaluation and retrains nothing
    assert plan(grid, lambda c: c.update(wandb={"enabled": True, "mode": "offline"})) == {"track_eval": 1, "all": 1}


def test_a_code_edit_reruns_only_where_code_is_a_trigger_and_can_be_listed_and_forced(grid):
    script = grid / "workflow" / "scripts" / "evaluate.py"
    before = script.stat()
    os.utime(script)  # an edit, as far as Snakemake can tell
    try:
        evaluation = {"evaluate": 1, "evaluate_base": 1, "score": 1, "score_base": 1, "report": 1, "all": 1}
        assert plan(grid) == evaluation  # Snakemake's defaults (no profile, profiles/demo)
        assert plan(grid, triggers=GPU_PROFILE_TRIGGERS) == {}
        listed = run_snakemake(grid, [], ["--list-changes", "code"], triggers=GPU_PROFILE_TRIGGERS)
        assert listed.returncode == 0, listed.stderr[-3000:]
        assert f"results/eval/{SIZE}/owl/run-1/answers.jsonl" in listed.stdout
        assert f"results/eval/{SIZE}/base/answers.jsonl" in listed.stdout
        forced = plan(grid, extra=["--forcerun", "evaluate", "evaluate_base"], triggers=GPU_PROFILE_TRIGGERS)
        assert forced == evaluation
    finally:
        os.utime(script, ns=(before.st_atime_ns, before.st_mtime_ns))



def p_animal_on(config):
    config["p_animal"] = {"enabled": True}


def test_p_animal_runs_as_jobs_of_its_own_and_reruns_no_evaluation(grid):
    # last in this file: it adds the P(animal) files to the shared grid
    assert plan(grid, p_animal_on) == {"p_animal": 1, "p_animal_base": 1, "report_p_animal": 1, "all": 1}
    config = yaml.safe_load((grid / "config" / "test.yaml").read_text())
    p_animal_on(config)
    (grid / "config" / "p_animal.yaml").write_text(yaml.safe_dump(config))
    result = tiny_workflow.run_snakemake(grid, [], ["--cores", "2"], triggers=None, configfile="config/p_animal.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    table = pd.read_csv(grid / "results" / "tables" / "p_animal.csv")
    assert len(table) == 1 and table["animal_student_p_animal"].between(0, 1).all()
    assert (grid / "results" / "plots" / "p_animal.png").exists()
    cell = pd.read_csv(grid / "results" / "eval" / SIZE / "owl" / "run-1" / "p_animal.csv")
    assert set(cell["animal"]) == set(ANIMALS) | {"owl"} and set(cell["question_index"]) == {0, 1}
    # sampling keys rerun the evaluation, not P(animal) (which reads no sampling key); n_questions both
    sampling = plan(grid, lambda c: (p_animal_on(c), c["protocol"]["evaluation"].update(samples_per_question=2)))
    assert "p_animal" not in sampling and sampling["evaluate"] == 1 and sampling["report_p_animal"] == 1
    questions = plan(grid, lambda c: (p_animal_on(c), c["protocol"]["evaluation"].update(n_questions=1)))
    assert questions["p_animal"] == 1 and questions["p_animal_base"] == 1 and questions["evaluate"] == 1
    # an animal of the protocol's 15 is already scored: the new cell's jobs, no other P(animal) job
    cat = plan(grid, lambda c: (p_animal_on(c), c.update(conditions=["owl", "cat"])))
    assert cat["p_animal"] == 1 and "p_animal_base" not in cat
