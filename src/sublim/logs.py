"""Job logging: everything a job prints (logging, tqdm bars, library warnings) goes to its log file
under logs/ and, as before, to the terminal Snakemake runs in."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


class Tee:
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for stream in self.streams:
            stream.write(text)
            stream.flush()
        return len(text)

    def flush(self):
        for stream in self.streams:
            stream.flush()

    def isatty(self):
        return False


def log_to(path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a", buffering=1)
    sys.stderr = Tee(sys.__stderr__, handle)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def start_job(log_path: str | Path, threads: int) -> None:
    """Log to the rule's log file and keep torch to the threads Snakemake granted, so jobs that
    run side by side do not oversubscribe the cores."""
    log_to(log_path)
    import torch

    torch.set_num_threads(max(1, int(threads)))
