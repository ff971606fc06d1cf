"""Outputs that appear whole or not at all: write to a `.partial` sibling, rename when complete."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _umask() -> int:
    try:  # Linux: read it, since setting it to read it back would race with other threads
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def readable_as_umask_allows(path: Path) -> None:
    """Give `path` (and what a folder holds) the modes a plain `open` would: some writers (safetensors,
    huggingface_hub's downloads) leave their files 0600, which nobody else on a shared filesystem can
    read. Symbolic links are left alone (a local model's links point at the user's own files)."""
    mask = _umask()
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for item in paths:
        if not item.is_symlink():
            os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~mask)


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yields `<path>.partial` to write (a file or a folder); it replaces `path` only when the block
    ends without error, so a killed job leaves at most the `.partial`, which the next run replaces."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    _remove(partial)
    yield partial
    readable_as_umask_allows(partial)
    if partial.is_dir():
        _remove(path)  # a folder cannot be renamed over a non-empty one
    partial.replace(path)
