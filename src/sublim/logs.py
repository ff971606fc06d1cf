"""Job logging: everything a job and its child processes print (logging, tqdm bars, library warnings,
a vLLM engine process's traceback) goes to its log file under logs/ and, as before, to the terminal
Snakemake runs in.

The capture works on file descriptors 1 and 2, not on Python's sys.stdout/sys.stderr: vLLM runs its
engine in a child process (forked or spawned) that writes to the inherited descriptors, and when the engine fails to
start, the cause is only in that process's output. `job_log_text()` gives the job's share of the log
back, so an error can name that cause.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from pathlib import Path

# seconds to wait at exit for output still in the pipes (a child process may keep them open)
DRAIN_TIMEOUT_S = 5.0


class _DescriptorTee:
    """Descriptor `fd` points at a pipe; a thread copies what arrives to the original target and the log."""

    def __init__(self, fd: int, log_fd: int, lock: threading.Lock):
        self.fd, self.log_fd, self.lock = fd, log_fd, lock
        self.original = os.dup(fd)
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        self.thread = threading.Thread(target=self._pump, args=(read_end,), daemon=True,
                                       name=f"log-tee-{fd}")
        self.thread.start()

    def _pump(self, read_end: int) -> None:
        while chunk := os.read(read_end, 1 << 16):
            with self.lock:
                os.write(self.log_fd, chunk)
            try:
                os.write(self.original, chunk)
            except OSError:  # the terminal went away (a detached run): the log still gets it
                pass
        os.close(read_end)

    def restore(self) -> None:
        os.dup2(self.original, self.fd)  # closes this process's write end of the pipe
        self.thread.join(DRAIN_TIMEOUT_S)


class _JobLog:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.start = os.lseek(self.fd, 0, os.SEEK_END)  # the job's share begins here
        lock = threading.Lock()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        self.tees = [_DescriptorTee(fd, self.fd, lock) for fd in (1, 2)]
        atexit.register(self.close)

    def close(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        for tee in self.tees:
            tee.restore()
        self.tees = []

    def text(self) -> str:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        with open(self.path, "rb") as handle:
            handle.seek(self.start)
            return handle.read().decode("utf-8", errors="replace")


_current: _JobLog | None = None


def log_to(path: str | Path) -> None:
    """Send this process's (and its children's) output to `path` too, and log at INFO to stderr."""
    global _current
    if _current is None:
        _current = _JobLog(Path(path))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def job_log_text() -> str:
    """What this job has written to its log so far ('' when the job logs nowhere)."""
    return _current.text() if _current is not None else ""


def start_job(log_path: str | Path, threads: int) -> None:
    """Log to the rule's log file and keep torch to the threads Snakemake granted, so jobs that
    run side by side do not oversubscribe the cores."""
    log_to(log_path)
    import torch

    torch.set_num_threads(max(1, int(threads)))
