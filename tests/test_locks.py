"""The locks (locks/cpu.txt, locks/cuda.txt, written by `make lock`) still hold what pyproject.toml and
locks/*.in ask for, and provenance names the lock an environment was installed from. Offline: the locks
are parsed, nothing is resolved."""

from __future__ import annotations

import hashlib
import re
import shlex
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from sublim import provenance

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ("locks/cpu.txt", "locks/cuda.txt")


def locked_versions(lock_text: str) -> dict[str, Version]:
    return {canonicalize_name(name): Version(version)
            for name, version in re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", lock_text, re.MULTILINE)}


def compile_command(lock_text: str) -> list[str]:
    """The `uv pip compile` command that wrote the lock, from uv's header."""
    line = next(line for line in lock_text.splitlines() if line.startswith("#    uv pip compile "))
    return shlex.split(line.lstrip("# "))


def requested(command: list[str]) -> list[Requirement]:
    """What the lock was resolved from: pyproject.toml's dependencies, the extras the command names
    and the command's .in files."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [command[i + 1] for i, arg in enumerate(command) if arg == "--extra"]
    lines = project["dependencies"] + [line for extra in extras for line in project["optional-dependencies"][extra]]
    for path in (arg for arg in command if arg.endswith(".in")):
        lines += [line.split("#")[0].strip() for line in (ROOT / path).read_text().splitlines()]
    return [Requirement(line) for line in lines if line]


def target_environment(command: list[str]) -> dict[str, str]:
    python = command[command.index("--python-version") + 1]
    return {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux",
            "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython"}


@pytest.mark.parametrize("lock", LOCKS)
def test_the_lock_holds_every_requested_package_at_an_allowed_version(lock):
    text = (ROOT / lock).read_text()
    command = compile_command(text)
    versions = locked_versions(text)
    drifted = []
    for requirement in requested(command):
        if requirement.marker and not requirement.marker.evaluate(target_environment(command)):
            continue
        version = versions.get(canonicalize_name(requirement.name))
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            drifted.append(f"{requirement} (locked: {version or 'absent'})")
    assert not drifted, f"{lock} no longer matches pyproject.toml / locks/*.in: {drifted}; run `make lock`"


def test_the_cpu_lock_takes_the_cpu_build_of_torch():
    assert locked_versions((ROOT / "locks/cpu.txt").read_text())["torch"].local == "cpu"
    assert locked_versions((ROOT / "locks/cuda.txt").read_text())["torch"].local is None


def test_the_conda_environment_names_the_cuda_lock_it_installs():
    """The rules' conda environment installs locks/cuda.txt (post-deploy script) and carries its hash,
    so that a new lock makes a new environment rather than leaving the old one in place."""
    digest = hashlib.sha256((ROOT / "locks/cuda.txt").read_bytes()).hexdigest()
    assert f"# locks/cuda.txt sha256: {digest}\n" in (ROOT / "envs/sublim.yaml").read_text(), "run `make lock`"
    assert "scripts/install_lock.sh locks/cuda.txt" in (ROOT / "envs/sublim.post-deploy.sh").read_text()


def test_provenance_records_the_lock_the_environment_came_from(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "env"))
    (tmp_path / "env").mkdir()
    provenance.write_provenance(tmp_path / "by_hand.provenance.json", stage="test")
    assert provenance.installed_lock() is None

    lock = tmp_path / "cpu.txt"
    lock.write_text("six==1.17.0\n")
    provenance.record_installed_lock(lock)
    provenance.write_provenance(tmp_path / "locked.provenance.json", stage="test")

    record = (tmp_path / "locked.provenance.json").read_text()
    assert hashlib.sha256(b"six==1.17.0\n").hexdigest() in record
    assert provenance.installed_lock() == {"file": lock.as_posix(),
                                           "sha256": hashlib.sha256(b"six==1.17.0\n").hexdigest()}
    assert '"lock": null' in (tmp_path / "by_hand.provenance.json").read_text()
