"""sublim.mps against stand-ins for nvidia-cuda-mps-control and nvidia-smi (tests/fake_gpu.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fake_gpu import daemon_starts, install_fakes
from sublim import devices, mps
from sublim.config import sizing_defaults


def sized(**keys) -> dict:
    return {**sizing_defaults(), **keys}


@pytest.fixture
def control(tmp_path, monkeypatch):
    bin_dir = install_fakes(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # as Snakemake/SLURM may set it for a job
    forget_mps_env(monkeypatch)
    return tmp_path / "mps"


def forget_mps_env(monkeypatch):
    """Unset the client variables and have them restored after the test: join() sets them."""
    for key in ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY"):
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)


OK_PROBE = [sys.executable, "-c", "pass"]
FAILING_PROBE = [sys.executable, "-c", "raise SystemExit('CUDA error: all CUDA-capable devices are busy')"]


def starts(base: Path) -> int:
    return len(daemon_starts(base / "pipe"))


def test_only_trainings_that_share_a_card_want_mps():
    assert mps.wanted(sized(mps=True, gpu_share=0.25))
    assert not mps.wanted(sized(mps=True, gpu_share=1.0))
    assert not mps.wanted(sized(mps=True))
    assert not mps.wanted(sized(mps=False, gpu_share=0.25))


def test_four_jobs_start_one_daemon_and_all_join(control, monkeypatch):
    base = control
    base.mkdir()
    with ThreadPoolExecutor(4) as pool:
        reasons = list(pool.map(lambda _: mps.join(base, probe=OK_PROBE), range(4)))
    assert reasons == [None] * 4
    assert daemon_starts(base / "pipe") == ["all"]  # one daemon, for every card of the machine
    assert os.environ["CUDA_MPS_PIPE_DIRECTORY"] == str(base / "pipe")
    assert os.environ["CUDA_MPS_LOG_DIRECTORY"] == str(base / "log")
    assert mps.stop_if_started(base)
    assert not mps.daemon_running(mps.client_env(base))
    assert not mps.stop_if_started(base)  # nothing left to stop


def test_each_card_gets_a_daemon_of_its_own_that_sees_only_that_card(control, monkeypatch):
    base = control
    monkeypatch.setenv("FAKE_GPUS", "0 1 2 3")
    with ThreadPoolExecutor(4) as pool:
        reasons = list(pool.map(lambda device: mps.join(base, probe=OK_PROBE, device=device), ["1", "3", "1", "3"]))
    assert reasons == [None] * 4
    assert daemon_starts(base / "gpu-1" / "pipe") == ["GPU-fake-1"]
    assert daemon_starts(base / "gpu-3" / "pipe") == ["GPU-fake-3"]
    assert not (base / "pipe").exists() and not (base / "gpu-0").exists()
    # a client names its card by UUID: it stays on that card even if it never reaches the daemon
    assert os.environ["CUDA_VISIBLE_DEVICES"] in ("GPU-fake-1", "GPU-fake-3")
    assert mps.stop_if_started(base)
    for device in ("1", "3"):
        assert not mps.daemon_running(mps.client_env(base, device))
    assert not mps.stop_if_started(base)


def test_a_training_joins_the_daemon_of_the_card_the_allocator_gave_it(control, monkeypatch, tmp_path, caplog):
    base = control
    monkeypatch.setenv("FAKE_GPUS", "0 1")
    monkeypatch.setattr(devices, "_claim", None)
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # restored after the test: claim_gpus sets it
    busy = devices.claim(["0", "1"], cards=1, slots=4, lock_dir=tmp_path / "locks")  # card 0 is taken
    claim = devices.claim_gpus({"local_gpus": {"devices": ["0", "1"]}}, {"gpu": 1, "gpu_slots": 1}, "train",
                               lock_dir=tmp_path / "locks")
    assert claim.devices == ["1"] and os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    with caplog.at_level("WARNING"):
        # no CUDA here: the real probe fails under the new daemon, which is then stopped
        assert not mps.join_if_wanted(sized(mps=True, gpu_share=0.25), base)
    assert daemon_starts(base / "gpu-1" / "pipe") == ["GPU-fake-1"]
    assert not mps.daemon_running(mps.client_env(base, "1"))
    assert "a CUDA process failed under the new MPS daemon" in caplog.text
    busy.release()
    claim.release()


def test_a_daemon_someone_else_started_is_joined_but_not_stopped(control):
    base = control
    env = mps.client_env(base)
    for directory in env.values():
        Path(directory).mkdir(parents=True)
    subprocess.run([mps.CONTROL, "-d"], env={k: v for k, v in {**os.environ, **env}.items()
                                             if k != "CUDA_VISIBLE_DEVICES"}, check=True)
    assert mps.join(base, probe=FAILING_PROBE) is None  # running already: no start, no probe
    assert not mps.stop_if_started(base)
    assert mps.daemon_running(env)


def test_a_daemon_under_which_cuda_fails_is_stopped_and_the_job_runs_without(control):
    base = control
    base.mkdir()
    reason = mps.join(base, probe=FAILING_PROBE)
    assert "all CUDA-capable devices are busy" in reason and "daemon stopped" in reason
    assert not mps.daemon_running(mps.client_env(base))
    assert "CUDA_MPS_PIPE_DIRECTORY" not in os.environ


def test_a_daemon_that_will_not_start_is_reported(control, monkeypatch):
    base = control
    base.mkdir()
    monkeypatch.setenv("FAKE_MPS_FAIL_START", "1")
    assert "already running" in mps.join(base, probe=OK_PROBE)
    assert "CUDA_MPS_PIPE_DIRECTORY" not in os.environ


def test_an_exclusive_process_gpu_is_left_alone(control, monkeypatch):
    base = control
    base.mkdir()
    monkeypatch.setenv("FAKE_COMPUTE_MODE", "Exclusive_Process")
    assert mps.join(base, probe=OK_PROBE) == "GPU compute mode is Exclusive_Process, not Default"
    assert starts(base) == 0


def test_without_the_control_program_the_training_logs_why_and_goes_on(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PATH", str(tmp_path))
    forget_mps_env(monkeypatch)
    assert mps.join(tmp_path) == f"{mps.CONTROL} or nvidia-smi is not on PATH (no NVIDIA driver utilities here)"
    with caplog.at_level("WARNING"):
        assert not mps.join_if_wanted(sized(mps=True, gpu_share=0.25), tmp_path)
    assert "training without MPS" in caplog.text and "not on PATH" in caplog.text
    assert not mps.stop_if_started(tmp_path)


@pytest.mark.slow
def test_a_train_job_joins_the_workflows_daemon_and_the_workflow_stops_it(tmp_path, control, monkeypatch):
    """Through Snakemake on the tiny model: the train job joins a daemon this workflow started
    (before torch starts), says so in its log and provenance, and the Snakefile's onsuccess stops
    the daemon. The fake daemon does not schedule anything, so the CPU training runs as usual."""
    import json

    import tiny_workflow
    from tiny_workflow import SIZE, make_workdir, number_rows, run_snakemake, seed_numbers, tiny_config

    base = control
    monkeypatch.setenv("SUBLIM_MPS_DIR", str(base))
    env = mps.client_env(base)
    for directory in env.values():
        Path(directory).mkdir(parents=True)
    subprocess.run([mps.CONTROL, "-d"], env={k: v for k, v in {**os.environ, **env}.items()
                                             if k != "CUDA_VISIBLE_DEVICES"}, check=True)
    (base / mps.STARTED_MARKER).touch()  # as if an earlier train job of this workflow had started it

    config = tiny_config(tiny_workflow.tiny_model(), training={"epochs": 1})
    config["sizing"]["default"].update({"mps": True, "gpu_share": 0.25, "gpus": 1})
    workdir = make_workdir(tmp_path / "work", config, tiny_workflow.tiny_model())
    seed_numbers(workdir, number_rows(16))
    target = f"results/students/{SIZE}/owl/run-1/train.provenance.json"
    result = run_snakemake(workdir, [target])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    log = (workdir / f"logs/train/{SIZE}/owl/run-1.log").read_text()
    assert f"MPS client of the daemon at {env['CUDA_MPS_PIPE_DIRECTORY']}" in log
    assert json.loads((workdir / target).read_text())["mps_client"] is True
    assert not mps.daemon_running(env), "the workflow's onsuccess left its daemon running"
    assert not (base / mps.STARTED_MARKER).exists()
