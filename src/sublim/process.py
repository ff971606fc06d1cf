"""The processes of a GPU job: how vLLM starts its engine process, and that the engine dies with the job.

vLLM forks its engine process unless told otherwise. A fork of a process that has touched CUDA (even
`torch.cuda.is_available()`) cannot use CUDA, so the engine died at start ("Cannot re-initialize CUDA
in forked subprocess"). Jobs therefore always spawn it. A spawned child imports the job's script
again as `__mp_main__`; the scripts call `die_with_parent_if_spawned(__name__)` there, so an engine
whose job was killed (OOM killer, preemption, SIGKILL) exits too instead of holding the GPU's memory.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

log = logging.getLogger(__name__)

ENGINE_START_METHOD = "spawn"
_PR_SET_PDEATHSIG = 1


def spawn_engine_processes() -> None:
    """Make vLLM spawn, not fork, its engine and worker processes (call before the engine starts)."""
    current = os.environ.get("VLLM_WORKER_MULTIPROC_METHOD")
    if current not in (None, ENGINE_START_METHOD):
        log.warning("VLLM_WORKER_MULTIPROC_METHOD=%s replaced by %s: a forked engine cannot use CUDA "
                    "once the job has touched it", current, ENGINE_START_METHOD)
    os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = ENGINE_START_METHOD


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
