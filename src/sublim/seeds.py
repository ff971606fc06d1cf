"""Seeds derived from the run id, so every random choice of run N is reproducible anywhere."""

from __future__ import annotations

import hashlib


def derive_seed(*parts: int | str) -> int:
    """A stable 31-bit seed from any parts (Python's hash() is salted per process)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
