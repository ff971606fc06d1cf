"""Outputs that appear whole or not at all: write to a `.partial` sibling, rename when complete."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yields `<path>.partial` to write (a file or a folder); it replaces `path` only when the block
    ends without error, so a killed job leaves at most the `.partial`, which the next run replaces."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    _remove(partial)
    yield partial
    if partial.is_dir():
        _remove(path)  # a folder cannot be renamed over a non-empty one
    partial.replace(path)
