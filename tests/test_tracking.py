"""WandB tracking with the real wandb client in offline mode: the run files it writes (the .wandb
transaction log, read back record by record) hold the expected metrics."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pandas as pd
import pytest

from sublim import tracking
from sublim.config import load_presets, sizing_for
from sublim.scoring import EVAL_COLUMNS
from sublim.jsonl import write_jsonl

BLOCK = 32768  # the .wandb file is a LevelDB-style log: 32 KiB blocks of (crc, length, type) chunks


def wandb_records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb run file"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def run_files(wandb_dir: Path) -> list[Path]:
    """The run files, once complete: finish() hands the last records to wandb's service process,
    which writes them when it gets to it; teardown waits for it (a job's exit does the same)."""
    import wandb

    wandb.teardown()
    return sorted(wandb_dir.glob("wandb/offline-run-*/run-*.wandb"))


def history(path: Path) -> list[dict]:
    """One dict per logged row; nested values (a table's reference) as nested dicts."""
    rows = []
    for record in of_type(path, "history"):
        row = {}
        for item in record.history.item:
            keys = [item.key] if item.key else list(item.nested_key)
            target = row
            for key in keys[:-1]:
                target = target.setdefault(key, {})
            target[keys[-1]] = json.loads(item.value_json)
        rows.append(row)
    return rows


def of_type(path: Path, kind: str):
    return [r for r in wandb_records(path) if r.WhichOneof("record_type") == kind]


def wandb_config(tmp_path, **extra):
    return {"wandb": {"enabled": True, "mode": "offline", "dir": str(tmp_path / "wandb"), **extra}}


def test_training_run_logs_loss_learning_rate_and_throughput_every_step(tmp_path, tiny_qwen_dir, monkeypatch):
    from tiny_workflow import number_rows

    from sublim.train import train_student

    monkeypatch.setenv("WANDB_MODE", "offline")
    write_jsonl(tmp_path / "dataset.jsonl", number_rows(8))
    training = {**load_presets()["seed"]["training"], "epochs": 1, "effective_batch": 4, "max_length": 64}
    config = wandb_config(tmp_path)
    with tracking.training_run(config, size="1m", condition="owl", run=2,
                               hyperparameters={"training": training, "seed": 2}) as tracker:
        assert tracker["report_to"] == "wandb" and tracker["run_name"] == "1m-owl-run-2-train"
        train_student(str(tiny_qwen_dir), str(tmp_path / "dataset.jsonl"),
                      [str(tmp_path / "epoch-1")], str(tmp_path / "resume"),
                      training, sizing_for({}, "1m"), 2, **tracker)

    [run_file] = run_files(tmp_path / "wandb")
    rows = history(run_file)
    steps = range(1, 3)  # 8 rows / batch 4
    for key in ("train/loss", "train/learning_rate", "train/samples_per_second", "train/tokens_per_second"):
        logged = {row["train/global_step"]: row[key] for row in rows if key in row}
        assert sorted(logged) == list(steps), key
        assert all(v > 0 for v in logged.values() if key != "train/learning_rate"), key
    speeds = [row["train/samples_per_second"] for row in rows if "train/samples_per_second" in row]
    assert all(s > 0 for s in speeds)

    [run] = [r.run for r in of_type(run_file, "run")]
    assert run.display_name == "1m-owl-run-2-train" and run.project == "subliminal-learning-scaling"
    assert run.run_group == "run-2" and run.job_type == "train"
    config_items = {i.key: json.loads(i.value_json) for r in of_type(run_file, "config") for i in r.config.update}
    config_items.update({i.key: json.loads(i.value_json) for i in run.config.update})
    assert config_items["condition"] == "owl" and config_items["training"]["epochs"] == 1


def eval_table(condition="owl"):
    rows = []
    for epoch, owl_count in ((1, 2), (2, 5)):
        for animal, count in (("owl", owl_count), ("cat", 1)):
            rows.append({"size": "1m", "condition": condition, "run": 1, "epoch": epoch, "animal": animal,
                         "count": count, "n": 10, "rate": count / 10, "is_target": animal == condition})
    return pd.DataFrame.from_records(rows, columns=EVAL_COLUMNS)


def test_evaluation_run_logs_the_preference_table_and_the_target_rate_per_epoch(tmp_path):
    record = tracking.log_evaluation(wandb_config(tmp_path), eval_table(), size="1m", condition="owl", run=1)
    assert record["mode"] == "offline" and record["name"] == "1m-owl-run-1-eval"

    [run_file] = run_files(tmp_path / "wandb")
    rows = history(run_file)
    rates = {row["eval/epoch"]: row["eval/target_rate"] for row in rows if "eval/target_rate" in row}
    assert rates == {1: 0.2, 2: 0.5}
    [table] = [row["eval/preferences"] for row in rows if "eval/preferences" in row]
    assert table["_type"] == "table-file" and table["nrows"] == 4
    table_file = next(run_file.parent.glob("files/media/table/eval/preferences_*.table.json"))
    logged = json.loads(table_file.read_text())
    assert logged["columns"] == EVAL_COLUMNS and len(logged["data"]) == 4
    summary = {i.key: json.loads(i.value_json) for r in of_type(run_file, "summary") for i in r.summary.update}
    assert summary["eval/final_target_rate"] == 0.5


def test_the_neutral_control_has_no_target_rate():
    assert tracking.target_rates(eval_table(condition="neutral")) == {}


def test_tracking_off_changes_nothing(tmp_path):
    with tracking.training_run({}, size="1m", condition="owl", run=1, hyperparameters={}) as tracker:
        assert tracker == {}
    assert not (tmp_path / "wandb").exists()


def test_wandb_mode_environment_wins_and_bad_modes_are_named(monkeypatch):
    section = tracking.settings({"wandb": {"enabled": True, "mode": "online"}})
    assert tracking.needs_api_key(section, environ={})
    assert not tracking.needs_api_key(section, environ={"WANDB_MODE": "offline"})
    with pytest.raises(ValueError, match="wandb.mode"):
        tracking.mode(section, environ={"WANDB_MODE": "sometimes"})
