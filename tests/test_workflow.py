"""The DAG: dry runs of the full grid and of one cell, dot output, lint and formatting."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from tiny_workflow import job_counts

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SIZES, CONDITIONS, RUNS = 7, 16, 3


def snakemake(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([SNAKEMAKE, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    if check and result.returncode:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def test_full_grid_plans_one_job_per_cell_and_stage():
    counts = job_counts(snakemake("-n", "--quiet", "rules").stdout)
    cells = SIZES * CONDITIONS * RUNS
    assert {rule: counts[rule] for rule in ("generate", "filter", "train", "evaluate")} == dict.fromkeys(
        ("generate", "filter", "train", "evaluate"), cells)
    assert counts["evaluate_base"] == SIZES and counts["prepare_model"] == SIZES


def test_gpu_profile_plans_the_grid_with_gpu_resources():
    result = snakemake("-n", "--profile", "profiles/b200")
    assert re.search(r"rule train:.*?resources:[^\n]*gpu=1", result.stdout, re.S)
    assert job_counts(result.stdout)["train"] == SIZES * CONDITIONS * RUNS


def test_one_cell_target_plans_only_that_cells_chain():
    counts = job_counts(snakemake("results/eval/14b/eagle/run-2/eval.csv", "-n", "--quiet", "rules").stdout)
    assert counts == {"prepare_model": 1, "generate": 1, "filter": 1, "train": 1, "evaluate": 1, "score": 1,
                      "total": 6}


@pytest.mark.parametrize("flag", ["--dag", "--rulegraph"])
def test_dag_and_rulegraph_are_dot(flag):
    out = snakemake("results/eval/7b/owl/run-1/eval.csv", "--config", "conditions=[neutral,owl]", flag).stdout
    dot = out[out.index("digraph"):]
    assert dot.count("{") == dot.count("}") and dot.rstrip().endswith("}")
    for rule in ("prepare_model", "generate", "filter", "train", "evaluate", "score"):
        assert rule in dot


def test_lint_is_clean():
    result = snakemake("--lint", "--profile", "profiles/demo", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition" in result.stdout + result.stderr


def test_snakefmt_check_passes():
    snakefmt = str(Path(sys.executable).with_name("snakefmt"))
    result = subprocess.run([snakefmt, "--check", "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("override, key", [
    ("sizes=[0.5b,13b]", "sizes[1]"),
    ("conditions=[neutral,Red_Panda]", "conditions[1]"),
    ("preset=fast", "preset"),
])
def test_a_bad_config_stops_before_any_job_naming_the_key(override, key):
    result = snakemake("-n", "--config", override, check=False)
    assert result.returncode != 0
    assert f"config key '{key}'" in result.stdout + result.stderr


def test_a_yaml_syntax_error_in_a_config_file_names_the_file_and_line(tmp_path):
    from tiny_workflow import copy_workflow

    copy_workflow(tmp_path)
    config = tmp_path / "config" / "config.yaml"
    config.write_text(config.read_text().replace("runs: [1, 2, 3]", "runs: [1, 2, 3"))
    line = config.read_text().splitlines().index("runs: [1, 2, 3") + 1
    # the Snakefile's own config file: named by sublim before Snakemake loads it
    result = subprocess.run([SNAKEMAKE, "-n"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert re.search(rf"config/config\.yaml, line \d+, column \d+: not valid YAML \(while parsing a flow sequence "
                     rf"that starts at line {line}:", result.stdout + result.stderr)
    # a file given by a profile or --configfile is loaded by Snakemake first; README's advice,
    # --verbose, shows the file and line
    result = subprocess.run([SNAKEMAKE, "-n", "--configfile", "config/config.yaml", "--verbose"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "Config file is not valid JSON or YAML" in result.stdout + result.stderr
    assert re.search(rf'in "config/config\.yaml", line {line}, column', result.stdout + result.stderr)
