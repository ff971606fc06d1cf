"""The processes of a GPU job: how vLLM starts its engine process, and that the engine dies with the job.

vLLM forks its engine process unless told otherwise. A fork of a process that has touched CUDA (even
`torch.cuda.is_available()`) cannot use CUDA: the engine died at start ("Cannot re-initialize CUDA
in forked subprocess"). A spawned engine always works, but imports torch and vLLM again: ~14 s more
per engine start, ~17 s a job with its close (benchmarks/README.md, "Sixth session").
So a job forks its engine while its own process has not touched CUDA (the jobs ask NVML, never the
CUDA runtime, for their GPUs: sublim.backends.vllm_unusable_reason) and spawns it otherwise; torch's
own record decides. Either way the engine dies with the job when the job is killed (OOM killer,
preemption, SIGKILL) instead of holding the GPU's memory: a forked engine through the fork hook set
here, a spawned one (which imports the job's script again as `__mp_main__`) through
`die_with_parent_if_spawned(__name__)` in the scripts.

A fork copies GNU OpenMP's thread pool without its threads: where the job's process had run a torch
parallel region (any CPU op on a large tensor with more than one thread), the forked engine's next
parallel region waited forever for threads it did not have (a 7b engine on the H200, ninth session;
reproduced on CPU in tests/test_job_processes.py). So a forked engine runs torch on one CPU thread, as
vLLM runs its multiprocess GPU workers', which takes its regions off the pool.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_fork_hook_set = False


def cuda_touched() -> bool:
    """Whether this process has called into CUDA, so that a forked child could not use it. torch
    records it (a child forked now is "in a bad fork"); a probe child reads that record and exits."""
    import torch

    if torch.cuda.is_initialized():
        return True
    try:
        pid = os.fork()
    except OSError:
        return True
    if pid == 0:  # the probe: the answer and out, never back into the job's code
        answer = 1
        try:
            answer = int(bool(torch.cuda._is_in_bad_fork()))
        finally:
            os._exit(answer)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) != 0


def engine_start_method() -> str:
    """"fork" where the job's process has not touched CUDA, else "spawn"; a user's spawn stays."""
    if os.environ.get("VLLM_WORKER_MULTIPROC_METHOD") == "spawn" or not sys.platform.startswith("linux"):
        return "spawn"
    return "spawn" if cuda_touched() else "fork"


def prepare_engine_processes() -> str:
    """Set how vLLM starts its engine process (call before vLLM is imported: it reads the setting at
    import too) and tie a forked engine's life to the job's. Returns the method."""
    global _fork_hook_set
    method, current = engine_start_method(), os.environ.get("VLLM_WORKER_MULTIPROC_METHOD")
    if current == "fork" and method == "spawn":
        log.warning("VLLM_WORKER_MULTIPROC_METHOD=fork replaced by spawn: this job's process has touched CUDA, "
                    "and a forked engine could not use it")
    os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = method
    if method == "fork" and not _fork_hook_set:
        os.register_at_fork(after_in_child=forked_engine_setup)
        _fork_hook_set = True
    log.info("vLLM's engine process is %s", "forked" if method == "fork" else "spawned")
    return method


def forked_engine_setup() -> None:
    """In a process forked from the job: die with the job, and keep torch to one CPU thread so that
    no parallel region waits on the job's OpenMP pool, whose threads the fork did not copy."""
    die_with_parent()
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def die_with_parent() -> bool:
    """Ask Linux to SIGKILL this process when its parent exits; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:  # it died before prctl took effect: we were reparented already
        os._exit(1)
    return True


def die_with_parent_if_spawned(module_name: str) -> None:
    """In a job script's spawned child (imported as __mp_main__), tie its life to the job's."""
    if module_name == "__mp_main__":
        die_with_parent()
