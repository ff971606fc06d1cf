"""The configuration a Snakemake profile runs the workflow with, read outside Snakemake (for
`make estimate` and `make status`): the Snakefile's own `configfile:`, then the profile's
`configfiles` in order, then any given on the command line, later files winning key by key as
Snakemake merges them; resolved and checked as the workflow does (sublim.config.resolve)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

from sublim.config import ConfigError, deep_merge, resolve
from sublim.devices import resolve_devices
from sublim.gpu_share import GPU_SLOTS


def _yaml(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys, got a {type(data).__name__}")
    return data


def snakefile_configfile(root: Path) -> Path:
    """The `configfile:` the Snakefile names."""
    match = re.search(r'^configfile:\s*["\'](.+?)["\']', (root / "Snakefile").read_text(), re.M)
    if not match:
        raise ConfigError(f"{root / 'Snakefile'} names no configfile")
    return root / match[1]


def profile_settings(profile: str | Path | None, root: Path = Path(".")) -> dict:
    """The profile's config.yaml (Snakemake's command-line options), {} without a profile."""
    return _yaml(root / profile / "config.yaml") if profile else {}


def merged_config(profile: str | Path | None = None, configfiles: list[str] = (), root: Path = Path(".")) -> dict:
    """The config files `snakemake --profile PROFILE [--configfile …]` loads, merged, not yet resolved
    (a command-line --configfile replaces the profile's list, as in Snakemake)."""
    settings = profile_settings(profile, root)
    listed = settings.get("configfiles") or settings.get("configfile") or []  # Snakemake takes either
    files = [snakefile_configfile(root)]
    files += [root / f for f in (configfiles or ([listed] if isinstance(listed, str) else listed))]
    config: dict = {}
    for path in files:
        config = deep_merge(config, _yaml(path))
    return config


def load_config(profile: str | Path | None = None, configfiles: list[str] = (), root: Path = Path(".")) -> dict:
    """The resolved configuration that run would use; raises ConfigError naming a bad key."""
    return resolve(merged_config(profile, configfiles, root))


def _gpu_slot_limit(settings: dict) -> int | None:
    given = settings.get("resources") or {}
    if isinstance(given, list):  # ["gpu_slots=4", …], as on the command line
        given = dict(item.split("=", 1) for item in given)
    value = given.get("gpu_slots")
    return int(value) if value is not None else None


def profile_cards(config: dict, settings: dict) -> int | None:
    """Cards the profile runs jobs on at once: the machine's under `local_gpus` (profiles/multi-gpu),
    else the `gpu_slots` budget's (profiles/b200: 4 slots, one card); None when the profile sets no
    budget (a cluster: as many as the scheduler grants) or the cards cannot be seen from here."""
    if config.get("local_gpus"):
        try:
            return len(resolve_devices(copy.deepcopy(config["local_gpus"]["devices"])))
        except ConfigError:
            return None
    slots = _gpu_slot_limit(settings)
    return max(1, slots // GPU_SLOTS) if slots else None
