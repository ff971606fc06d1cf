"""One training over several processes (`sizing.train_processes`, 72b on two GPUs): the batch
arithmetic, the FSDP settings, and a real 2-process run on the CPU (gloo) through train_student."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from sublim import train
from sublim.config import ConfigError, load_presets, resolve
from sublim.jsonl import write_jsonl

TRAINING = {**load_presets()["seed"]["training"], "epochs": 2, "effective_batch": 8, "max_length": 500,
            "loss": "completion_only"}
# the workflow's levers that run on a CPU (Liger and fused AdamW are GPU-only)
SIZING = {"train_micro_batch": 2, "padding_free": True, "attention": "varlen", "lazy_metrics": True,
          "lora_autocast_inputs": True, "logging_steps": 1}


@pytest.mark.parametrize("micro, processes, effective, expected", [
    (None, 1, 60, (60, 1)),
    (20, 1, 60, (20, 3)),
    (10, 2, 60, (10, 3)),  # 72b on two GPUs: 10 rows x 2 processes x 3 steps
    (None, 2, 60, (30, 1)),
    (11, 2, 66, (11, 3)),  # the paper preset
])
def test_the_effective_batch_is_micro_batch_times_accumulation_times_processes(micro, processes, effective, expected):
    sizing = {"train_micro_batch": micro, "train_processes": processes}
    assert train.micro_batch({"effective_batch": effective}, sizing) == expected


def test_a_micro_batch_that_does_not_fit_the_processes_is_refused():
    with pytest.raises(ValueError, match="10 x 2 training processes does not divide effective_batch 66"):
        train.micro_batch({"effective_batch": 66}, {"train_micro_batch": 10, "train_processes": 2})
    config = {"preset": "paper", "sizes": ["72b"], "conditions": ["owl"], "runs": [1], "backend": "auto",
              "models": {"72b": {"source": "local", "path": "/m", "params_b": 72.7}},
              "sizing": {"72b": {"train_micro_batch": 10, "train_processes": 2, "gpus": 2}}}
    with pytest.raises(ConfigError, match=r"sizing.72b.train_micro_batch': 10 x train_processes 2 does not divide"):
        resolve(config)


def test_several_gpus_shard_the_model_with_fsdp_and_one_process_does_not(monkeypatch):
    assert train.fsdp_arguments({"train_processes": 2}) == {}  # no GPU here: plain data parallel
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert train.fsdp_arguments({"train_processes": 1}) == {}
    fsdp = train.fsdp_arguments({"train_processes": 2, "gradient_checkpointing": True})
    assert fsdp["fsdp"] is True and fsdp["fsdp_config"]["version"] == 2
    # rank 0 alone reads the weights; checkpoints hold the adapter; FSDP's own checkpointing
    assert fsdp["fsdp_config"]["cpu_ram_efficient_loading"] is True
    assert fsdp["fsdp_config"]["state_dict_type"] == "FULL_STATE_DICT"
    assert fsdp["fsdp_config"]["activation_checkpointing"] is True


@pytest.mark.slow  # two tiny trainings, one of them in two processes: about a minute on 2 busy cores
def test_two_processes_train_the_same_adapters_as_one_and_report_to_the_jobs_run(tmp_path, monkeypatch):
    from test_tracking import history, run_files, wandb_config
    from tiny_workflow import number_rows, tiny_model

    from sublim import tracking

    monkeypatch.setenv("WANDB_MODE", "offline")
    write_jsonl(tmp_path / "dataset.jsonl", number_rows(16))
    adapters = {}
    for processes in (1, 2):
        dirs = [str(tmp_path / f"{processes}" / f"epoch-{e}") for e in (1, 2)]
        sizing = {**SIZING, "train_processes": processes}
        config = wandb_config(tmp_path / f"{processes}") if processes == 2 else {}
        with tracking.training_run(config, size="1m", condition="owl", run=1,
                                   hyperparameters={"training": TRAINING}) as tracker:
            metrics = train.train_student(str(tiny_model()), str(tmp_path / "dataset.jsonl"), dirs,
                                          str(tmp_path / f"resume-{processes}"), TRAINING, sizing, 3, **tracker)
        assert metrics["epoch"] == 2 and not (tmp_path / f"resume-{processes}").exists()
        adapters[processes] = [load_file(f"{d}/adapter_model.safetensors") for d in dirs]

    # the same rows in every optimizer step, the loss averaged over the same tokens: the same adapters
    for one, two in zip(adapters[1], adapters[2]):
        assert one.keys() == two.keys()
        for name in one:
            torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-6)

    # 16 rows, 8 a step, 2 epochs: the first process's logged steps reach the job's wandb run
    [run_file] = run_files(tmp_path / "2" / "wandb")
    logged = {row["train/global_step"]: row["train/loss"] for row in history(run_file) if "train/loss" in row}
    assert sorted(logged) == [1, 2, 3, 4] and all(loss > 0 for loss in logged.values())
