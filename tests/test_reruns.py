"""What a change reruns on a finished grid: exactly the jobs that read the changed key and those
downstream of their outputs (README.md, "Change the grid"). One tiny grid (tests/tiny_workflow.py:
one size, the owl condition, one run, one epoch) is run to the end once, with Snakemake's default
rerun triggers; every test is then a dry run against it with one change."""

from __future__ import annotations

import hashlib
import json
import os

import pandas as pd
import pytest
import yaml

import tiny_workflow
from sublim.protocol import ANIMALS
from tiny_workflow import SIZE, finish_grid, job_counts, make_workdir, model_record, run_snakemake, tiny_config

# the tiny grid is run to the end (two of them: ~2.5 minutes on 2 cores): `make test-fast` leaves these out
pytestmark = pytest.mark.slow

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


# a new animal's cell: its own chain, every cell re-scored for the new column (CPU), the seed's
# reference re-scored for it (CPU), the report
NEW_CELL = {"generate": 1, "filter": 1, "train": 1, "evaluate": 1, "score": 2, "score_base": 1, "reference_seed": 1,
            "report": 1, "all": 1}


def test_a_deleted_model_folder_plans_no_job_and_a_new_cell_only_its_own(grid):
    # The jobs that load the model depend on its record (results/models/), not on the folder: a
    # folder deleted to free disk reruns nothing, and a new cell does not rerun the others (the
    # folder used to be their input: preparing it again reran every cell of the size).
    folder = grid / "resources" / "models" / SIZE
    moved = grid.parent / "moved-model"
    folder.rename(moved)
    try:
        assert plan(grid) == {}
        assert plan(grid, lambda c: c.update(conditions=["owl", "cat"])) == NEW_CELL
        # prepared again ahead of time (README, "The model folder"): its record is rewritten with
        # the same bytes, and Snakemake's checksum of it sees nothing new
        # the target before --forcerun, which takes every word after it as a rule (README)
        again = run_snakemake(grid, [], ["models", "--forcerun", "prepare_model"], triggers=None)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert (folder / "config.json").exists() and (folder / "sublim-model.json").exists()
        assert plan(grid) == {}
    finally:
        if not folder.exists():
            moved.rename(folder)


def tree(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): os.readlink(p) if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


def test_a_mistyped_model_fails_before_any_cell_keeps_the_folder_and_its_revert_reruns_nothing(grid):
    folder = grid / "resources" / "models" / SIZE
    before = tree(folder)

    def typo(config):
        config["models"][SIZE]["path"] += "-typo"

    # another model is another record: everything that loads it is planned again, after it
    assert GPU_RULES <= plan(grid, typo).keys()
    failed = run_snakemake(grid, [], [], triggers=None, configfile="config/changed.yaml")
    assert failed.returncode != 0
    assert "(config key 'models.1m.path') does not exist" in failed.stdout + failed.stderr
    assert tree(folder) == before  # the model folder was prepared aside, never replaced
    assert plan(grid) == {}  # the typo reverted: nothing reruns


def test_a_deleted_adapter_is_planned_again_by_the_default_target(grid):
    # The grid is complete when every kept adapter exists (README, "Troubleshooting"): a deleted
    # one is trained again, and its evaluation with it.
    adapter = grid / f"results/students/{SIZE}/owl/run-1/epoch-1/adapter_model.safetensors"
    data, stat = adapter.read_bytes(), adapter.stat()
    adapter.unlink()
    try:
        assert plan(grid) == {"train": 1, "evaluate": 1, "score": 1, "report": 1, "all": 1}
    finally:
        adapter.write_bytes(data)
        os.utime(adapter, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert plan(grid) == {}


def test_every_provenance_records_the_code_its_inputs_outputs_and_the_protocol(grid):
    config = yaml.safe_load((grid / "config" / "test.yaml").read_text())
    records = {path: json.loads(path.read_text()) for path in (grid / "results").rglob("*.provenance.json")}
    assert {record["stage"] for record in records.values()} == {"prepare_model", "generate", "filter", "train",
                                                                "evaluate"}
    for path, record in records.items():
        assert record["code"]["version"], path
        if (tiny_workflow.REPO / ".git").exists():  # the jobs ran this checkout's code
            assert len(record["code"]["commit"]) == 40 and isinstance(record["code"]["dirty"], bool), path
        assert record["inputs"] and record["outputs"], path
        for name, written in record["outputs"].items():
            assert written["sha256"] == hashlib.sha256((path.parent / name).read_bytes()).hexdigest(), (path, name)
        for name, read in record["inputs"].items():
            # the model by its identity and config.json, never its weights; every file by its sha256
            assert ("model" in read and "config_sha256" in read) if name.startswith("resources/models/") \
                else len(read["sha256"]) == 64, (path, name)
        if record["stage"] != "prepare_model":
            assert record["protocol"]["training"]["epochs"] == config["protocol"]["training"]["epochs"], path
            assert set(record["protocol"]) == {"seed", "generation", "filter", "training", "evaluation"}, path
    assert model_record(grid, config).exists()


def test_a_new_condition_plans_its_cell_and_cpu_scoring_only(grid):
    counts = plan(grid, lambda c: c.update(conditions=["owl", "cat"]))
    # cat's own chain; the animals are the columns of every eval.csv, so each cell is re-scored
    # (owl, cat and the base model: CPU), the seed's reference re-scored for cat, and the report redone;
    # owl and the base ask no model again
    assert counts == NEW_CELL


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



@pytest.fixture(scope="module")
def grid_keeping_last(tmp_path_factory):
    """Two epochs, both evaluated, and `keep_adapters: last`: as the seed did, epoch 1's adapter
    is deleted once its evaluation is written."""
    config = tiny_config(tiny_workflow.tiny_model(), training={"epochs": 2}, evaluation={"epochs": "all"})
    config["keep_adapters"] = "last"
    workdir = make_workdir(tmp_path_factory.mktemp("grid-keeping-last"), config)
    finish_grid(workdir)
    return workdir


def test_adapters_not_kept_are_deleted_once_evaluated_and_nothing_is_planned_for_them(grid_keeping_last):
    cell = grid_keeping_last / f"results/students/{SIZE}/owl/run-1"
    assert not (cell / "epoch-1").exists()
    assert {p.name for p in (cell / "epoch-2").iterdir()} == {"adapter_model.safetensors", "adapter_config.json"}
    assert (grid_keeping_last / f"results/eval/{SIZE}/owl/run-1/eval.csv").exists()
    assert plan(grid_keeping_last) == {}  # the dropped adapter is not missing: training is not planned


def test_what_a_rerun_costs_when_adapters_were_dropped(grid_keeping_last):
    # README, "Keeping fewer adapters": a change that evaluates epoch 1 again trains the cell again
    # to get its adapter back; keeping it again does too; scoring stays CPU only
    samples = plan(grid_keeping_last, lambda c: c["protocol"]["evaluation"].update(samples_per_question=2))
    assert samples == {"train": 1, "evaluate": 1, "evaluate_base": 1, "score": 1, "score_base": 1, "report": 1,
                       "power": 1, "all": 1}  # power.csv states the evaluation's size
    assert plan(grid_keeping_last, lambda c: c.update(keep_adapters="all")) == {
        "train": 1, "evaluate": 1, "score": 1, "report": 1, "all": 1}
    assert plan(grid_keeping_last, lambda c: c["protocol"]["evaluation"].update(scoring="first_word")) == {
        "score": 1, "score_base": 1, "reference_seed": 1, "report": 1, "all": 1}  # the seed's answers re-scored


def p_animal_on(config):
    config["p_animal"] = {"enabled": True}


def test_p_animal_runs_as_jobs_of_its_own_and_reruns_no_evaluation(grid):
    # near the end of this file: it adds the P(animal) files to the shared grid
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


def test_the_default_target_rebuilds_a_deleted_adapter(grid):
    # last in this file: it retrains the cell (the documented command is the default target)
    cell = grid / f"results/students/{SIZE}/owl/run-1"
    (cell / "epoch-1" / "adapter_model.safetensors").unlink()
    result = run_snakemake(grid, [], [], triggers=None)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert job_counts(result.stdout + result.stderr).get("train") == 1
    assert (cell / "epoch-1" / "adapter_model.safetensors").exists()
    assert plan(grid) == {}
