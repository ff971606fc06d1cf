"""Runs that survive being killed: a SIGKILLed train job resumes from its last finished epoch and
ends with the same adapters as a run never interrupted; a SIGKILLed generate job leaves no
half-written raw file, and the rerun writes a complete one. Everything runs through Snakemake on a
tiny random-init Qwen2 (tests/tiny_workflow.py), killed the way an OOM killer or a preempted node
kills: SIGKILL to Snakemake's whole process group, so no one gets to clean up."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from safetensors.torch import load_file

import tiny_workflow
from tiny_workflow import (SIZE, kill_group, make_workdir, number_rows,
                           read_jsonl_lines, run_snakemake, seed_numbers, start_snakemake,
                           tiny_config, unlock, wait_for)

CELL = f"{SIZE}/owl/run-1"
TRAIN_TARGET = f"results/students/{CELL}/train.provenance.json"
RAW_TARGET = f"results/numbers/{CELL}/raw.jsonl"
EPOCHS = 3


@pytest.fixture(scope="module")
def tiny_model():
    return tiny_workflow.tiny_model()


def train_workdir(root, model):
    # 16 rows at batch 4: 4 optimizer steps per epoch, seconds on this CPU, so the watcher (polling
    # every 20 ms) kills well inside epoch 2
    config = tiny_config(model, filter={"n_keep": 16}, training={"epochs": EPOCHS})
    workdir = make_workdir(root, config, model)
    seed_numbers(workdir, number_rows(16))
    return workdir


def adapters(workdir):
    return [load_file(workdir / f"results/students/{CELL}/epoch-{e}/adapter_model.safetensors")
            for e in range(1, EPOCHS + 1)]


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.slow
def test_killed_training_resumes_at_the_next_epoch_and_matches_an_uninterrupted_run(tmp_path, tiny_model):
    reference = train_workdir(tmp_path / "uninterrupted", tiny_model)
    result = run_snakemake(reference, [TRAIN_TARGET])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    workdir = train_workdir(tmp_path / "killed", tiny_model)
    resume = workdir / "resources" / "resume" / CELL
    process = start_snakemake(workdir, [TRAIN_TARGET], tmp_path / "killed.log")
    wait_for(lambda: (resume / "adapters" / "epoch-1").exists(), process, 300, "epoch 1's adapter")
    kill_group(process)

    # killed inside epoch 2: epoch 1's state is on disk, no declared output is
    assert not (resume / "adapters" / "epoch-2").exists(), "the kill came too late to test resuming"
    (checkpoint,) = (resume / "checkpoints").glob("checkpoint-*")
    assert json.loads((checkpoint / "trainer_state.json").read_text())["epoch"] == 1.0
    assert not (workdir / f"results/students/{CELL}/epoch-1/adapter_model.safetensors").exists()

    unlock(workdir)
    result = run_snakemake(workdir, [TRAIN_TARGET])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    log = (workdir / f"logs/train/{CELL}.log").read_text()
    assert "epoch 1 of 3 done, training continues at epoch 2" in log
    after_resume = log.split("training continues at epoch 2", 1)[1]
    assert "epoch 2 adapter saved" in after_resume and "epoch 3 adapter saved" in after_resume
    assert "epoch 1 adapter saved" not in after_resume, "the rerun trained epoch 1 again"
    assert not resume.exists(), "the resume state is dropped once every adapter is exported"
    assert not (workdir / "resources" / "resume").exists(), "empty folders were left behind"
    assert "discarding" not in (reference / f"logs/train/{CELL}.log").read_text(), "a fresh training warned"

    # Bitwise on CPU: the optimizer, scheduler, RNG and data order all come back from the
    # checkpoint, so the resumed run does exactly the arithmetic of the uninterrupted one.
    for epoch, (resumed, uninterrupted) in enumerate(zip(adapters(workdir), adapters(reference)), 1):
        assert resumed.keys() == uninterrupted.keys()
        assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed), (
            f"epoch {epoch}: resumed adapter differs from the uninterrupted one by up to "
            f"{max_difference(resumed, uninterrupted):.3g}")
    # and training did move the adapter: a test that compared two untrained adapters proves nothing
    assert max_difference(adapters(reference)[0], adapters(reference)[2]) > 0


def test_resume_state_from_another_dataset_is_discarded(tmp_path, tiny_model):
    """A job reruns when its dataset changed; the old checkpoint must not be resumed into it."""
    from sublim.train import resume_checkpoint, resume_fingerprint

    training = tiny_config(tiny_model)["protocol"]["training"]
    resume = tmp_path / "resume"
    stale = fake_checkpoint(resume, epoch=1, step=12)
    fake_stash(resume, 1)
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    old.write_text('{"prompt": "1", "completion": "2"}\n')
    new.write_text('{"prompt": "1", "completion": "3"}\n')
    (resume / "fingerprint.json").write_text(json.dumps(resume_fingerprint("m", str(old), training, 1)))

    assert resume_checkpoint(resume, resume_fingerprint("m", str(old), training, 1)) == str(stale)
    assert resume_checkpoint(resume, resume_fingerprint("m", str(new), training, 1)) is None
    assert not stale.exists()


def test_a_checkpoint_cut_off_mid_save_is_skipped_for_the_previous_one(tmp_path):
    from sublim.train import last_complete_checkpoint

    complete, cut_off = tmp_path / "checkpoint-12", tmp_path / "checkpoint-24"
    complete.mkdir()
    (complete / "trainer_state.json").write_text(json.dumps({"epoch": 1.0}))
    cut_off.mkdir()
    (cut_off / "adapter_model.safetensors").write_bytes(b"\0" * 10)  # killed before the state
    assert last_complete_checkpoint(tmp_path) == complete
    assert not cut_off.exists()


def fake_checkpoint(resume, epoch: int, step: int):
    checkpoint = resume / "checkpoints" / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"epoch": float(epoch), "num_train_epochs": 3}))
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (checkpoint / name).write_text(f"epoch {epoch} {name}")
    return checkpoint


def fake_stash(resume, epoch: int):
    folder = resume / "adapters" / f"epoch-{epoch}"
    folder.mkdir(parents=True)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (folder / name).write_text(f"epoch {epoch} {name}")


def test_a_missing_stashed_adapter_is_copied_again_from_the_checkpoint_or_stops_before_training(tmp_path):
    from sublim.train import resume_checkpoint

    fingerprint = {"dataset_sha256": "0" * 64}
    resume = tmp_path / "resume"
    checkpoint = fake_checkpoint(resume, epoch=2, step=8)
    (resume / "fingerprint.json").write_text(json.dumps(fingerprint))
    fake_stash(resume, 1)  # killed between the checkpoint and the stash of epoch 2
    assert resume_checkpoint(resume, fingerprint) == str(checkpoint)
    assert (resume / "adapters/epoch-2/adapter_model.safetensors").read_text() == "epoch 2 adapter_model.safetensors"

    shutil.rmtree(resume / "adapters" / "epoch-1")  # gone, and no checkpoint holds it any more
    with pytest.raises(FileNotFoundError, match=r"epoch 1's adapter is missing .* delete .*resume and rerun"):
        resume_checkpoint(resume, fingerprint)


def test_a_fresh_training_discards_nothing_and_says_nothing(tmp_path, caplog):
    from sublim.train import resume_checkpoint

    resume = tmp_path / "resume"
    with caplog.at_level("WARNING"):
        assert resume_checkpoint(resume, {"seed": 1}) is None
        shutil.rmtree(resume)
        (resume / "checkpoints").mkdir(parents=True)  # what a trainer makes before its first save
        assert resume_checkpoint(resume, {"seed": 1}) is None
    assert "discarding" not in caplog.text


def test_a_second_trainer_of_a_cell_stops_at_once_naming_the_first_and_deletes_nothing(tmp_path, tiny_model):
    from sublim import locks

    workdir = train_workdir(tmp_path, tiny_model)
    resume = workdir / "resources" / "resume" / CELL
    fake_checkpoint(resume, epoch=1, step=4)  # the first trainer's state, mid-training
    fake_stash(resume, 1)
    state = sorted(p.relative_to(resume) for p in resume.rglob("*"))
    with locks.exclusive(f"{resume}.lock", "the first trainer", wait=False):
        result = run_snakemake(workdir, [TRAIN_TARGET])
    assert result.returncode != 0
    log = (workdir / f"logs/train/{CELL}.log").read_text()
    assert f"(PID {os.getpid()} on {socket.gethostname()} holds resources/resume/{CELL}.lock)" in log
    assert "this job stops and deletes nothing" in log
    assert "resuming" not in log and "adapter saved" not in log
    assert sorted(p.relative_to(resume) for p in resume.rglob("*")) == state


def test_written_weights_are_readable_as_the_umask_allows(tmp_path):
    # safetensors writes its files 0600; on a shared filesystem others must read models and adapters
    from safetensors.torch import save_file

    from sublim.atomic import atomic_output
    from sublim.train import export_adapters

    umask = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "model") as partial:
            partial.mkdir()
            save_file({"w": torch.zeros(2)}, partial / "model.safetensors")
        stash = tmp_path / "resume" / "adapters" / "epoch-1"
        stash.mkdir(parents=True)
        save_file({"w": torch.zeros(2)}, stash / "adapter_model.safetensors")
        (stash / "adapter_config.json").write_text("{}")
        export_adapters(stash.parent, [str(tmp_path / "students" / "epoch-1")])
    finally:
        os.umask(umask)
    assert oct((tmp_path / "model" / "model.safetensors").stat().st_mode & 0o777) == oct(0o644)
    assert oct((tmp_path / "students/epoch-1/adapter_model.safetensors").stat().st_mode & 0o777) == oct(0o644)


def batches_done(log, total: int) -> int:
    done = re.findall(rf"\| *(\d+)/{total} \[", log.read_text()) if log.exists() else []
    return max(map(int, done), default=0)


@pytest.mark.slow
def test_killed_generation_leaves_no_raw_file_and_the_rerun_writes_a_complete_one(tmp_path, tiny_model):
    n_prompts, batches = 80, 20  # generate_batch_size 4
    config = tiny_config(tiny_model, generation={"n_prompts": n_prompts, "max_prompts": n_prompts,
                                                 "max_tokens": 24})
    workdir = make_workdir(tmp_path / "work", config, tiny_model)
    log = workdir / f"logs/generate/{CELL}.log"
    raw = workdir / RAW_TARGET
    process = start_snakemake(workdir, [RAW_TARGET], tmp_path / "killed.log")
    # tqdm's bar in the job log: kill once a few of the batches are done
    wait_for(lambda: batches_done(log, batches) >= 3, process, 300, "3 generation batches")
    kill_group(process)
    assert batches_done(log, batches) < batches, "the kill came after generation finished"
    assert not raw.exists(), "a killed generate job left a raw file behind"

    unlock(workdir)
    result = run_snakemake(workdir, [RAW_TARGET])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    from sublim.prompts import number_prompts

    rows = read_jsonl_lines(raw)  # every line parses
    assert [row["index"] for row in rows] == list(range(n_prompts))
    assert [row["prompt"] for row in rows] == number_prompts(n_prompts, 1)
    assert all(isinstance(row["completion"], str) for row in rows)
    assert not raw.with_name(raw.name + ".partial").exists()


def test_write_jsonl_killed_mid_write_keeps_the_previous_file(tmp_path):
    """The one moment generation's kill test cannot aim at: SIGKILL while the file is written."""
    target = tmp_path / "raw.jsonl"
    target.write_text('{"index": 0, "prompt": "old", "completion": "1"}\n')
    writer = textwrap.dedent(f"""
        import sys, time
        from sublim.jsonl import write_jsonl
        def rows():
            for i in range(10_000):
                if i == 100:
                    print("halfway", flush=True)
                    time.sleep(60)
                yield {{"index": i, "prompt": "p", "completion": "1"}}
        write_jsonl({str(target)!r}, rows())
    """)
    process = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "halfway"
    process.kill()
    process.wait(timeout=30)
    assert read_jsonl_lines(target) == [{"index": 0, "prompt": "old", "completion": "1"}]


def test_a_job_that_needs_a_model_folder_being_prepared_waits_for_it(tmp_path):
    from sublim import locks

    lock = tmp_path / "models" / "1m.lock"
    waiter = textwrap.dedent(f"""
        import logging
        from sublim import locks
        logging.basicConfig(level=logging.INFO)
        with locks.exclusive({str(lock)!r}, "preparing the model"):
            print("prepared", flush=True)
    """)
    with locks.exclusive(lock, "preparing the model"):
        process = subprocess.Popen([sys.executable, "-c", waiter], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        time.sleep(3)
        assert process.poll() is None, "it did not wait"
    out, err = process.communicate(timeout=60)
    assert out.strip() == "prepared"
    assert f"waiting for PID {os.getpid()} on {socket.gethostname()}, which holds {lock}" in err
    assert not lock.exists()
