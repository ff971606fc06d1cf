"""The configuration: a preset of protocol.md, the user's overrides, the grid and hardware sizing.

`resolve()` turns what Snakemake loaded from config/*.yaml into the checked configuration every
rule reads. A bad value raises ConfigError naming the key, before any job runs.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

NEUTRAL = "neutral"
BASE = "base"  # the untuned model's evaluation: a condition name the grid may not use

# Hardware sizing when neither the config nor the profile names a value: safe on a CPU laptop.
SIZING_FALLBACK = {
    "train_micro_batch": None,  # None: the whole effective batch in one step
    "gradient_checkpointing": False,
    "dtype": "auto",
    "generate_batch_size": 64,
    "tensor_parallel_size": 1,
    "gpu_memory_utilization": 0.85,
    "max_num_seqs": 256,
    "max_model_len": 4096,
    "gpus": 0,
    "train_processes": 1,  # > 1: one training split over that many processes (GPUs), sublim.train
    "mem_mb": 8000,
    "runtime": 60,
}


class ConfigError(ValueError):
    """A configuration value that cannot run; the message names the key."""


def load_presets() -> dict:
    text = resources.files("sublim").joinpath("data/presets.yaml").read_text()
    return yaml.safe_load(text)


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


def _schema_errors(config: dict, schema: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    return [f"config key '{_key_path(e.absolute_path)}': {e.message}" for e in errors]


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
    return problems


def resolve(config: dict, schema_path: str | Path) -> dict:
    """The preset merged with the user's protocol overrides, validated; raises ConfigError."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    presets = load_presets()
    preset = config.get("preset")
    if preset not in presets:
        raise ConfigError(f"config key 'preset': unknown preset {preset!r}; choose one of {', '.join(presets)}")
    resolved = copy.deepcopy(dict(config))
    resolved["protocol"] = deep_merge(presets[preset], config.get("protocol") or {})
    # `--config runs=[1,2]` arrives as strings; a run id is a number however it was typed
    resolved["runs"] = [int(r) if isinstance(r, str) and r.isdigit() else r for r in resolved.get("runs", [])]
    problems = _schema_errors(resolved, schema)
    if not problems:
        problems = _cross_check(resolved)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return resolved


def sizing_for(config: dict, size: str) -> dict:
    """Hardware sizing of one model size: fallback < sizing.default < sizing.<size>."""
    sizing = config.get("sizing") or {}
    return {**SIZING_FALLBACK, **(sizing.get("default") or {}), **(sizing.get(size) or {})}


def seed_for(setting: int | str, run: int) -> int:
    """A protocol seed setting ("run" or a fixed integer) for one run."""
    return int(run) if setting == "run" else int(setting)


def animals(config: dict) -> list[str]:
    return [c for c in config["conditions"] if c != NEUTRAL]


def eval_epochs(protocol: dict) -> list[int]:
    epochs = protocol["training"]["epochs"]
    return list(range(1, epochs + 1)) if protocol["evaluation"]["epochs"] == "all" else [epochs]
