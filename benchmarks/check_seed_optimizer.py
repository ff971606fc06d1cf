"""Which optimizer does the `seed` preset really train with? Trains a tiny random-init Qwen2 (real Qwen
tokenizer) for a few optimizer steps through sublim.train.build_trainer with the seed preset's
training settings and reports the optimizer class the trainer built, how many LoRA tensors have 8-bit
state (8-bit AdamW keeps its moment estimates as uint8), weight decay and data seed. On a CUDA machine
with the gpu extra installed it must be bitsandbytes' AdamW with 8-bit state for every LoRA tensor; on a
CPU it is torch's AdamW (the logged fallback of sublim.train.optimizer_name). Seconds on a GPU.

    python benchmarks/check_seed_optimizer.py --json seed_optimizer.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, Qwen2Config, set_seed

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import number_rows, qwen_tokenizer  # noqa: E402

from sublim.config import load_presets, sizing_defaults  # noqa: E402
from sublim.jsonl import write_jsonl  # noqa: E402
from sublim.train import build_trainer, load_student_dataset  # noqa: E402

# bitsandbytes keeps 32-bit state for tensors under 4096 elements (min_8bit_size): at hidden size 768 every
# r=8 LoRA matrix (6144+ elements) gets 8-bit state.
TINY = dict(hidden_size=768, intermediate_size=1536, num_hidden_layers=2, num_attention_heads=12,
            num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=2048)


def optimizer_report(steps: int, workdir: Path) -> dict:
    training = {**load_presets()["seed"]["training"], "epochs": 1, "effective_batch": 4}
    write_jsonl(workdir / "dataset.jsonl", number_rows(training["effective_batch"] * steps, seed=1))
    set_seed(1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(Qwen2Config(**TINY), dtype=dtype)
    trainer = build_trainer(model, qwen_tokenizer(), load_student_dataset(workdir / "dataset.jsonl"), training,
                            sizing_defaults(), seed=1, checkpoint_dir=workdir / "ckpt")
    trainer.args.save_strategy = "no"
    start = time.perf_counter()
    trainer.train()
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # inside accelerate's wrapper
    states = [s for s in optimizer.state.values() if s]
    state_dtypes = sorted({str(v.dtype) for s in states for v in s.values() if torch.is_tensor(v)})
    eight_bit = [any(torch.is_tensor(v) and v.dtype == torch.uint8 for v in s.values()) for s in states]
    return {
        "preset_optimizer": training["optimizer"], "trainer_optim": str(trainer.args.optim.value),
        "optimizer_class": f"{type(optimizer).__module__}.{type(optimizer).__qualname__}",
        "tensors_with_state": len(states), "tensors_with_8bit_state": sum(eight_bit), "state_dtypes": state_dtypes,
        "weight_decay": sorted({g["weight_decay"] for g in optimizer.param_groups}),
        "data_seed": trainer.args.data_seed, "optimizer_steps": trainer.state.global_step,
        "train_s": time.perf_counter() - start, "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
        "bitsandbytes": _version("bitsandbytes"),
    }


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        record = optimizer_report(args.steps, Path(tmp))
    Path(args.json).write_text(json.dumps(record, indent=1))
    print(json.dumps(record))


if __name__ == "__main__":
    main()
