"""Bad inputs stop with an error that names the file (and line or config key) and says what to do:
a malformed line in a raw or dataset file, an empty filtered set, a missing adapter, a model path
that does not exist. Each goes through the code the workflow runs: Snakemake jobs where the check
sits in a job, else the package function the job script calls."""

from __future__ import annotations

import json

import pytest

import tiny_workflow
from tiny_workflow import (SIZE, make_workdir, model_record, number_rows, run_snakemake,
                           seed_numbers, tiny_config)

CELL = f"{SIZE}/owl/run-1"


@pytest.fixture(scope="module")
def tiny_model():
    return tiny_workflow.tiny_model()


def failed_job_log(workdir, target: str, log: str) -> str:
    result = run_snakemake(workdir, [target])
    assert result.returncode != 0, f"{target} was made from bad input"
    return (workdir / log).read_text()


def test_malformed_raw_line_names_file_and_line(tmp_path, tiny_model):
    workdir = make_workdir(tmp_path, tiny_config(tiny_model), tiny_model)
    cell = seed_numbers(workdir, number_rows(4))
    lines = (cell / "raw.jsonl").read_text().splitlines()
    lines[2] = lines[2][:25]  # a line cut short, as a crashed hand-written tool would leave it
    (cell / "raw.jsonl").write_text("\n".join(lines) + "\n")

    log = failed_job_log(workdir, f"results/numbers/{CELL}/dataset.jsonl", f"logs/filter/{CELL}.log")
    assert f"results/numbers/{CELL}/raw.jsonl, line 3: not valid JSON" in log
    assert "delete it and rerun the workflow" in log


@pytest.mark.slow  # a filter and a train job run through Snakemake: ~50 s on 2 busy cores
def test_empty_filtered_set_stops_training_naming_dataset_and_counts(tmp_path, tiny_model):
    workdir = make_workdir(tmp_path, tiny_config(tiny_model), tiny_model)
    rows = [{"index": i, "prompt": "Continue: 1, 2, 3", "completion": "I love owls!"} for i in range(8)]
    seed_numbers(workdir, rows)

    log = failed_job_log(workdir, f"results/students/{CELL}/train.provenance.json", f"logs/train/{CELL}.log")
    assert f"results/numbers/{CELL}/dataset.jsonl has no rows" in log
    assert "filter.json" in log and "n_prompts" in log
    counts = json.loads((workdir / f"results/numbers/{CELL}/filter.json").read_text())
    assert counts["n_kept"] == 0 and counts["rejected"]["invalid format"] == 8


@pytest.mark.parametrize(("line", "problem"), [
    ('{"prompt": "1, 2", "completion": "3"', "line 2: not valid JSON"),
    ('{"prompt": "1, 2"}', "line 2: missing completion"),
    ('"prompt completion"', "line 2: a JSON str, not an object"),
])
def test_malformed_dataset_line_names_file_and_line(tmp_path, line, problem):
    from sublim.train import load_student_dataset  # what the train job reads its dataset with

    dataset = tmp_path / "dataset.jsonl"
    dataset.write_text('{"prompt": "1, 2", "completion": "3"}\n' + line + "\n")
    with pytest.raises(ValueError) as error:
        load_student_dataset(dataset)
    assert f"{dataset}, {problem}" in str(error.value)
    assert "rerun the workflow" in str(error.value)


def test_missing_adapter_is_named_before_an_engine_loads(tmp_path, tiny_model):
    from sublim.backends import open_backend  # what the evaluate job opens its engine with
    from sublim.config import sizing_for

    present = tmp_path / "epoch-1"
    present.mkdir()
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (present / name).write_text("")
    absent = tmp_path / "epoch-2"
    with pytest.raises(FileNotFoundError) as error:
        open_backend("transformers", str(tiny_model), sizing_for({}, SIZE),
                     {"epoch-1": str(present), "epoch-2": str(absent)})
    message = str(error.value)
    assert str(absent) in message and "adapter_model.safetensors" in message
    assert "rerun the workflow" in message


def test_missing_stashed_adapter_at_export_says_how_to_retrain(tmp_path):
    from sublim.train import export_adapters  # the train job's last step

    stash = tmp_path / "resume" / "adapters"
    (stash / "epoch-1").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as error:
        export_adapters(stash, [str(tmp_path / "out" / "epoch-1")])
    assert str(stash / "epoch-1") in str(error.value)
    assert f"delete {stash.parent}" in str(error.value)


def test_model_path_that_does_not_exist_names_the_config_key(tmp_path):
    missing = tmp_path / "no-such-model"
    config = tiny_config(missing)
    workdir = make_workdir(tmp_path / "work", config)
    record = model_record(workdir, config)

    log = failed_job_log(workdir, "models", f"logs/prepare_model/{SIZE}/{record.stem}.log")
    assert f"model path {missing} (config key 'models.{SIZE}.path') does not exist" in log
    assert not (workdir / f"resources/models/{SIZE}").exists()


def test_model_path_without_config_json_is_refused(tmp_path):
    from sublim.models import prepare_model

    weights_only = tmp_path / "weights"
    weights_only.mkdir()
    (weights_only / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"config key 'models\.1m\.path'\) has no config\.json"):
        prepare_model({"source": "local", "path": str(weights_only)}, tmp_path / "models" / SIZE)


def test_incomplete_prepared_model_folder_says_to_delete_and_rerun(tmp_path):
    from sublim.models import check_model_dir  # every model-using job checks its input with it

    broken = tmp_path / "resources" / "models" / SIZE
    broken.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="delete it and rerun"):
        check_model_dir(broken)


def record_outputs(provenance, *files) -> None:
    """What a producing job records of the files it wrote (sublim.provenance.write_provenance)."""
    from sublim.provenance import file_digest

    record = json.loads(provenance.read_text()) if provenance.exists() else {}
    record["outputs"] = {f.name: file_digest(f) for f in files}
    provenance.write_text(json.dumps(record))


def test_a_truncated_raw_file_is_named_as_damaged_not_filtered(tmp_path, tiny_model):
    workdir = make_workdir(tmp_path, tiny_config(tiny_model), tiny_model)
    cell = seed_numbers(workdir, number_rows(16))
    raw = cell / "raw.jsonl"
    record_outputs(cell / "raw.provenance.json", raw)
    # `head -n 10 raw.jsonl > t && cat t > raw.jsonl`: every line parses, six are gone
    raw.write_text("".join(raw.read_text().splitlines(keepends=True)[:10]))

    log = failed_job_log(workdir, f"results/numbers/{CELL}/dataset.jsonl", f"logs/filter/{CELL}.log")
    assert f"results/numbers/{CELL}/raw.jsonl is damaged: it has rows 10" in log
    assert f"results/numbers/{CELL}/raw.provenance.json records rows 16" in log
    assert "Delete it and rerun the workflow" in log
    assert not (cell / "dataset.jsonl").exists()


def test_an_emptied_dataset_is_named_as_damaged_before_training(tmp_path, tiny_model):
    workdir = make_workdir(tmp_path, tiny_config(tiny_model), tiny_model)
    seed_numbers(workdir, number_rows(16))
    made = run_snakemake(workdir, [f"results/numbers/{CELL}/dataset.jsonl"])
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    (workdir / f"results/numbers/{CELL}/dataset.jsonl").write_text("")  # `: > dataset.jsonl`

    log = failed_job_log(workdir, f"results/students/{CELL}/train.provenance.json", f"logs/train/{CELL}.log")
    assert f"results/numbers/{CELL}/dataset.jsonl is damaged: it has rows 0" in log
    assert "records rows 16" in log
    assert "n_prompts" not in log  # not the advice for a filter that kept nothing


def test_an_input_without_a_checksum_on_record_is_read_with_a_log_line(tmp_path, caplog):
    # results made before producers recorded checksums (a raw.provenance.json without outputs)
    from sublim.provenance import checked_input

    raw = tmp_path / "raw.jsonl"
    raw.write_text('{"prompt": "1", "completion": "2"}\n')
    (tmp_path / "raw.provenance.json").write_text(json.dumps({"stage": "generate", "n_rows": 1}))
    with caplog.at_level("INFO"):
        assert checked_input(raw)["rows"] == 1
    assert "no checksum on record" in caplog.text


def test_a_model_folder_is_prepared_again_only_when_it_does_not_hold_the_model(tmp_path, tiny_model):
    from sublim.models import ensure_model, held_model

    model = {"source": "local", "path": str(tiny_model)}
    folder = tmp_path / "models" / SIZE
    ensure_model(model, folder)  # missing: prepared
    assert held_model(folder) == model and (folder / "config.json").exists()
    marker = folder / "kept.txt"
    marker.write_text("the same folder")
    ensure_model(model, folder)  # holds it: left alone
    assert marker.exists()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ensure_model({"source": "local", "path": str(tmp_path / "typo")}, folder)
    assert marker.exists() and held_model(folder) == model  # a failed preparation replaced nothing


def test_a_hub_folder_downloaded_before_identity_files_is_taken_as_it_is(tmp_path):
    # huggingface_hub's snapshot_download(local_dir=…) records each file's commit; no network here
    from sublim.models import ensure_model, held_model

    revision = "7ae557604adf67be50417f59c2c2f167def9a775"
    model = {"source": "hub", "repo": "Qwen/Qwen2.5-0.5B-Instruct", "revision": revision}
    folder = tmp_path / SIZE
    records = folder / ".cache" / "huggingface" / "download"
    records.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_text("{}")
        (records / f"{name}.metadata").write_text(f"{revision}\netag\n1700000000.0\n")
    assert ensure_model(model, folder) == folder
    assert held_model(folder) == model
