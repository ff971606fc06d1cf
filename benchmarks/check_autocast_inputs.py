"""On the GPU, does `lora_autocast_inputs` train the same adapter? Trains the same random-init
student three times for a few optimizer steps through sublim.train.build_trainer (workflow sizing):
PEFT's casts on, on again (the GPU's own run-to-run spread), then off; reports the largest LoRA
weight differences.

    python benchmarks/check_autocast_inputs.py --shape 0.5b --json check.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import config_spec, harness_trainer, harness_training, qwen_tokenizer  # noqa: E402


def trained_lora(shape: str, sizing: dict, steps: int, workdir: Path) -> dict:
    _, trainer = harness_trainer(shape, sizing, harness_training({}), steps, workdir, qwen_tokenizer())
    trainer.train()
    return {k: v.detach().float().cpu() for k, v in trainer.model.named_parameters() if "lora_" in k}


def max_difference(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", default="0.5b")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    sizing = config_spec(args.shape, "workflow")["sizing"]
    with tempfile.TemporaryDirectory() as tmp:
        casts = trained_lora(args.shape, {**sizing, "lora_autocast_inputs": False}, args.steps, Path(tmp))
        casts_again = trained_lora(args.shape, {**sizing, "lora_autocast_inputs": False}, args.steps, Path(tmp))
        no_casts = trained_lora(args.shape, {**sizing, "lora_autocast_inputs": True}, args.steps, Path(tmp))
    record = {"shape": args.shape, "optimizer_steps": args.steps,
              "max_abs_diff_casts_vs_casts_again": max_difference(casts, casts_again),
              "max_abs_diff_casts_vs_no_casts": max_difference(casts, no_casts),
              "bitwise_equal_casts_vs_no_casts": all(casts[k].equal(no_casts[k]) for k in casts),
              "largest_lora_weight": max(v.abs().max().item() for v in casts.values()),
              "lora_tensors": len(casts)}
    Path(args.json).write_text(json.dumps(record, indent=1))
    print(json.dumps(record))


if __name__ == "__main__":
    main()
