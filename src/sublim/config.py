"""The configuration: a preset of protocol.md, the user's overrides, the grid and hardware sizing.

`resolve()` turns what Snakemake loaded from config/*.yaml into the checked configuration every
rule reads. A bad value raises ConfigError naming the key, before any job runs. Every default
lives once: protocol keys in data/presets.yaml, all others in data/config.schema.yaml (`default:`).
"""

from __future__ import annotations

import copy
import functools
import re
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from sublim.protocol import NEUTRAL_CONDITION

BASE = "base"  # the untuned model's evaluation: a condition name the grid may not use


class ConfigError(ValueError):
    """A configuration value that cannot run; the message names the key."""


def check_yaml_syntax(path: str | Path) -> None:
    """A YAML syntax error in `path` as a ConfigError naming the file, line and column (Snakemake's
    own loader says only that some config file is not valid). A missing file is left to the caller."""
    path = Path(path)
    if not path.is_file():
        return
    try:
        yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark, context = getattr(error, "problem_mark", None), getattr(error, "context_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        problem = getattr(error, "problem", None) or str(error)
        if context is not None and getattr(error, "context", None):
            problem = f"{error.context} that starts at line {context.line + 1}: {problem}"
        raise ConfigError(f"{where}: not valid YAML ({problem}); fix the file (mind indentation, "
                          f"closing brackets and quotes)") from None


def load_presets() -> dict:
    text = resources.files("sublim").joinpath("data/presets.yaml").read_text()
    return yaml.safe_load(text)


@functools.cache
def load_schema() -> dict:
    """data/config.schema.yaml: every key's type, meaning and (outside `protocol`) its default."""
    return yaml.safe_load(resources.files("sublim").joinpath("data/config.schema.yaml").read_text())


def _defaults(node: dict) -> dict:
    """The `default:` of each property of an object schema, nested objects included."""
    found = {}
    for key, prop in node.get("properties", {}).items():
        if "default" in prop:
            found[key] = copy.deepcopy(prop["default"])
        elif "properties" in prop:
            found[key] = _defaults(prop)
    return found


def sizing_defaults() -> dict:
    return _defaults(load_schema()["$defs"]["sizing"])


def section_settings(config: dict, section: str) -> dict:
    """A top-level section (`publish`, `wandb`) over the schema's defaults."""
    return deep_merge(_defaults(load_schema()["properties"][section]), config.get(section) or {})


def deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _key_path(path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _yaml_number_hint(error) -> str:
    # YAML 1.1 (PyYAML, as Snakemake reads config files) takes 2e-4 for text: a float in exponent
    # notation needs a dot in its mantissa
    number = re.fullmatch(r"([+-]?\d+)[eE]([+-]?\d+)", error.instance) if isinstance(error.instance, str) else None
    if error.validator != "type" or number is None:
        return ""
    return f" (YAML reads {error.instance} as text: write {number[1]}.0e{number[2]})"


def _schema_errors(config: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    return [f"config key '{_key_path(e.absolute_path)}': {e.message}{_yaml_number_hint(e)}" for e in errors]


def _cross_check(config: dict) -> list[str]:
    problems = []
    models = config["models"]
    for i, size in enumerate(config["sizes"]):
        if size not in models:
            problems.append(
                f"config key 'sizes[{i}]': size '{size}' is not defined under 'models' "
                f"(defined: {', '.join(models) or 'none'}); add it there or remove it from 'sizes'"
            )
    for size, model in models.items():
        if model["source"] == "hub" and not (model.get("repo") and model.get("revision")):
            problems.append(f"config key 'models.{size}': a hub model needs 'repo' and a pinned 'revision'")
        if model["source"] == "local" and not model.get("path"):
            problems.append(f"config key 'models.{size}': a local model needs 'path'")
    for i, condition in enumerate(config["conditions"]):
        if condition == BASE:
            problems.append(f"config key 'conditions[{i}]': '{BASE}' is reserved for the untuned model's evaluation")
    training = config["protocol"]["training"]
    for size in config["sizes"]:
        sizing = sizing_for(config, size)
        micro, processes = sizing["train_micro_batch"], sizing["train_processes"]
        if micro is not None and training["effective_batch"] % (micro * processes):
            times = f" x train_processes {processes}" if processes > 1 else ""
            problems.append(
                f"config key 'sizing.{size}.train_micro_batch': {micro}{times} does not divide "
                f"protocol.training.effective_batch {training['effective_batch']}"
            )
    generation = config["protocol"]["generation"]
    if generation["max_prompts"] < generation["n_prompts"]:
        problems.append("config key 'protocol.generation.max_prompts': must be >= n_prompts")
    beyond = [e for e in kept_epochs(config) if e > training["epochs"]]
    if beyond:
        problems.append(f"config key 'keep_adapters': epoch {beyond[0]} is beyond protocol.training.epochs "
                        f"{training['epochs']}")
    return problems


def resolve(config: dict) -> dict:
    """The preset merged with the user's protocol overrides, validated; raises ConfigError."""
    presets = load_presets()
    preset = config.get("preset")
    if preset not in presets:
        raise ConfigError(f"config key 'preset': unknown preset {preset!r}; choose one of {', '.join(presets)}")
    resolved = copy.deepcopy(dict(config))
    resolved["protocol"] = deep_merge(presets[preset], config.get("protocol") or {})
    # `--config runs=[1,2]` arrives as strings; a run id is a number however it was typed
    resolved["runs"] = [int(r) if isinstance(r, str) and r.isdigit() else r for r in resolved.get("runs", [])]
    problems = _schema_errors(resolved)
    if not problems:
        problems = _cross_check(resolved)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return resolved


def sizing_for(config: dict, size: str) -> dict:
    """Hardware sizing of one model size: the schema's defaults < sizing.default < sizing.<size>."""
    sizing = config.get("sizing") or {}
    return {**sizing_defaults(), **(sizing.get("default") or {}), **(sizing.get(size) or {})}


def seed_for(setting: int | str, run: int) -> int:
    """A protocol seed setting ("run" or a fixed integer) for one run."""
    return int(run) if setting == "run" else int(setting)


def animals(conditions: list[str]) -> list[str]:
    """The animals among the conditions (all but the neutral control and the untuned base)."""
    return [c for c in conditions if c not in (NEUTRAL_CONDITION, BASE)]


def kept_epochs(config: dict) -> list[int]:
    """The epochs whose adapters stay on disk after their evaluation (`keep_adapters`)."""
    setting = config.get("keep_adapters", load_schema()["properties"]["keep_adapters"]["default"])
    epochs = config["protocol"]["training"]["epochs"]
    if setting == "all":
        return list(range(1, epochs + 1))
    return [epochs] if setting == "last" else sorted(setting)


def eval_epochs(protocol: dict) -> list[int]:
    epochs = protocol["training"]["epochs"]
    return list(range(1, epochs + 1)) if protocol["evaluation"]["epochs"] == "all" else [epochs]
