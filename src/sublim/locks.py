"""Exclusive locks on state that lives outside a job's declared outputs, so that Snakemake's own
bookkeeping cannot protect it: a cell's training state (resources/resume/…) and a size's prepared
model folder (resources/models/…).

A lock is a file beside the state, held with fcntl.flock for as long as the holding process lives:
the kernel drops it when the process ends, fails or is SIGKILLed, so nothing needs cleaning up
after a crash. The file names its holder (PID and host), so a second job can say who is in its way.
The holder removes the file when it lets go; a contender that opened the old file re-opens the
path, so two processes never hold two files of one path.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import logging
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)


class LockHeld(RuntimeError):
    """Another live process holds the lock; the message names it and what to do."""


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 200).decode(errors="replace").split()
    return f"PID {text[0]} on {text[1]}" if len(text) >= 2 else "a process that has not yet written its PID"


def _open(path: Path) -> int:
    # another holder's release may remove the folder between mkdir and open: try again
    for _ in range(10):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            continue
    raise FileNotFoundError(errno.ENOENT, "could not create the lock file", str(path))


def acquire(path: str | Path, what: str, wait: bool) -> int:
    """Hold the lock at `path` and return its descriptor. `wait`: block until the holder lets go
    (logging who it is); otherwise raise LockHeld at once."""
    path = Path(path)
    while True:
        fd = _open(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if not wait:
                os.close(fd)
                raise LockHeld(f"{what} is already running ({holder} holds {path}); this job stops and "
                               f"deletes nothing. Wait for it to finish, or stop it, then run again") from None
            log.info("waiting for %s, which holds %s (%s)", holder, path, what)
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)  # the previous holder removed the file we locked: lock the path's new file
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
    return fd


def release(path: str | Path, fd: int, prune: int = 0) -> None:
    """Remove the lock file, then let go; then up to `prune` folders above it, those left empty."""
    path = Path(path)
    path.unlink(missing_ok=True)
    os.close(fd)
    for folder in list(path.parents)[:prune]:
        try:
            folder.rmdir()  # only when empty
        except OSError:
            break


@contextmanager
def exclusive(path: str | Path, what: str, wait: bool = True) -> Iterator[None]:
    fd = acquire(path, what, wait)
    try:
        yield
    finally:
        release(path, fd)


def hold_until_exit(path: str | Path, what: str, prune: int = 0) -> None:
    """Take the lock now, failing at once if it is held, and keep it until this process exits
    (then `release` it, with `prune`)."""
    fd = acquire(path, what, wait=False)
    atexit.register(release, path, fd, prune)
