"""A GPU job's processes: vLLM's engine is forked while the job has not touched CUDA and spawned once
it has (never forked after), its output reaches the job's log, and it dies with the job. CPU only: a
stand-in `vllm` package records how the engine would have been started, and plain multiprocessing
children stand in for the engine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A stand-in for vllm: LLM() records the start method the engine process would get and whether CUDA
# was initialised in the job's process by then (torch's own fork-poisoning record).
FAKE_VLLM = {
    "vllm/__init__.py": """
        import json, os

        class SamplingParams:
            def __init__(self, **kwargs):
                self.kwargs = kwargs

        class LLM:
            def __init__(self, **kwargs):
                import torch
                with open(os.environ["FAKE_VLLM_RECORD"], "w") as handle:
                    json.dump({"start_method": os.environ.get("VLLM_WORKER_MULTIPROC_METHOD", "fork"),
                               "cuda_initialized": torch.cuda.is_initialized(),
                               "enforce_eager": kwargs["enforce_eager"]}, handle)

            def get_tokenizer(self):
                return None
    """,
    "vllm/lora/__init__.py": "",
    "vllm/lora/request.py": """
        class LoRARequest:
            def __init__(self, name, lora_id, path):
                self.name, self.lora_id, self.path = name, lora_id, path
    """,
}


def write_fake_vllm(root: Path) -> Path:
    for name, text in FAKE_VLLM.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def run_python(code: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


@pytest.fixture
def job_env(tmp_path):
    fake = write_fake_vllm(tmp_path / "fake")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(REPO / "src")]),
           "FAKE_VLLM_RECORD": str(tmp_path / "record.json"), "VLLM_WORKER_MULTIPROC_METHOD": "fork"}
    return env, tmp_path / "record.json"


OPEN_ENGINE = """
    from sublim.backends import open_backend
    from sublim.config import sizing_for
    open_backend("vllm", "/model", sizing_for({}, "7b"), stage="evaluate")
"""


def test_a_job_that_has_not_touched_cuda_forks_its_engine(job_env):
    """The forked engine inherits the job's imports: ~17 s less per job than a spawned one."""
    env, record = job_env
    done = run_python(OPEN_ENGINE, env)
    assert done.returncode == 0, done.stderr
    import json

    assert json.loads(record.read_text())["start_method"] == "fork"
    assert "replaced" not in done.stderr


def test_a_job_that_touched_cuda_spawns_its_engine(job_env):
    """Even when the user's environment says fork. On a GPU machine `torch.cuda.is_available()` is
    enough: torch then marks every later fork as bad (here that record is set by hand, as a CPU build
    of torch never sets it), and a forked engine could not use the GPU."""
    env, record = job_env
    done = run_python("import torch; torch.cuda._is_in_bad_fork = lambda: True\n" + textwrap.dedent(OPEN_ENGINE), env)
    assert done.returncode == 0, done.stderr
    import json

    assert json.loads(record.read_text())["start_method"] == "spawn"
    assert "replaced by spawn" in done.stderr


def test_the_probe_reads_torchs_record_in_a_child(monkeypatch):
    import torch

    from sublim.process import cuda_touched

    assert cuda_touched() is False
    monkeypatch.setattr(torch.cuda, "_is_in_bad_fork", lambda: True)
    assert cuda_touched() is True


def test_choosing_the_backend_does_not_initialise_cuda(job_env, monkeypatch):
    """`auto` asks NVML how many GPUs there are; is_available() and the CUDA runtime's device count
    would initialise CUDA in the job's process (and poison a fork)."""
    import torch

    import sublim.backends as backends

    def poisoning(*_):
        raise AssertionError("CUDA runtime called before the engine starts")

    monkeypatch.setattr(torch.cuda, "is_available", poisoning)
    monkeypatch.setattr(torch._C, "_cuda_getDeviceCount", poisoning, raising=False)  # absent on CPU builds
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name: object())
    assert backends.choose_backend("auto") == "vllm"


CHILD_FAILS = """
    import multiprocessing, sys
    from sublim.logs import job_log_text, log_to

    def engine():
        raise RuntimeError("the engine's own cause")

    if __name__ == "__main__":
        log_to(sys.argv[1])
        print("job started", flush=True)
        child = multiprocessing.get_context("spawn").Process(target=engine, name="EngineCore_DP0")
        child.start(); child.join()
        from sublim.backends import engine_failure_cause
        print("CAUSE:", engine_failure_cause(job_log_text()), flush=True)
"""


def test_a_spawned_childs_output_reaches_the_job_log_and_names_the_cause(tmp_path):
    script, log = tmp_path / "job.py", tmp_path / "logs" / "job.log"
    script.write_text(textwrap.dedent(CHILD_FAILS))
    log.parent.mkdir()
    log.write_text("an earlier job's line: ValueError: not this one\n")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, str(script), str(log)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    text = log.read_text()
    # the child's traceback went through the inherited descriptor into the log, and to the terminal
    assert "RuntimeError: the engine's own cause" in text and "job started" in text
    assert "RuntimeError: the engine's own cause" in done.stderr
    assert "CAUSE: RuntimeError: the engine's own cause" in done.stdout
    assert text.startswith("an earlier job's line")  # appended, never truncated


ORPHAN = """
    import multiprocessing, os, sys, time
    from sublim.process import die_with_parent_if_spawned, prepare_engine_processes

    die_with_parent_if_spawned(__name__)

    def engine(pid_file):
        with open(pid_file, "w") as handle:
            handle.write(str(os.getpid()))
        time.sleep(120)

    if __name__ == "__main__":
        method = prepare_engine_processes()  # what the job does before vLLM starts its engine
        if method != sys.argv[2]:
            sys.exit(f"expected {sys.argv[2]}, got {method}")
        multiprocessing.get_context(method).Process(target=engine, args=(sys.argv[1],)).start()
        time.sleep(120)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_the_engine_process_dies_with_a_killed_job(tmp_path, method):
    """A job SIGKILLed by the OOM killer or a preemption must not leave its engine holding the GPU."""
    script, pid_file = tmp_path / "job.py", tmp_path / "engine.pid"
    script.write_text(textwrap.dedent(ORPHAN))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "VLLM_WORKER_MULTIPROC_METHOD": method}
    job = subprocess.Popen([sys.executable, str(script), str(pid_file), method], env=env)
    deadline = time.time() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.time() < deadline and job.poll() is None:
        time.sleep(0.2)
    assert job.poll() is None, f"the job exited with {job.returncode}"
    engine = int(pid_file.read_text())
    assert alive(engine)
    job.send_signal(signal.SIGKILL)
    job.wait()
    deadline = time.time() + 10
    while alive(engine) and time.time() < deadline:
        time.sleep(0.1)
    assert not alive(engine), f"the {method}ed engine outlived its killed job"


OPENMP_BEFORE_FORK = """
    import multiprocessing, os, sys
    import torch
    from sublim.process import prepare_engine_processes

    def engine(done_file):
        torch.ones(10_000_000).add_(1)  # a parallel region in the forked engine
        open(done_file, "w").write("done")

    if __name__ == "__main__":
        torch.set_num_threads(2)
        torch.ones(10_000_000).add_(1)  # the job's own parallel region before its engine starts
        if sys.argv[2] == "job":
            assert prepare_engine_processes() == "fork"
        child = multiprocessing.get_context("fork").Process(target=engine, args=(sys.argv[1],))
        child.start()
        child.join(20)
        if child.is_alive():
            child.kill()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork start method and GNU OpenMP")
@pytest.mark.parametrize("setup", ["job", "bare_fork"])
def test_a_forked_engine_does_not_wait_on_the_jobs_openmp_pool(tmp_path, setup):
    """torch's GNU OpenMP pool is copied by a fork without its threads: after the parent ran a parallel
    region, a bare forked child's next one waits forever (the control); the job's fork setup keeps
    the engine's torch to one thread, and it finishes."""
    script, done_file = tmp_path / "job.py", tmp_path / "engine.done"
    script.write_text(textwrap.dedent(OPENMP_BEFORE_FORK))
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "VLLM_WORKER_MULTIPROC_METHOD")}
    done = subprocess.run([sys.executable, str(script), str(done_file), setup],
                          env={**env, "PYTHONPATH": str(REPO / "src")}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done_file.exists() == (setup == "job")
