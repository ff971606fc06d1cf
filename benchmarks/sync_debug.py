"""Where a training step makes the CPU wait for the GPU: every synchronizing CUDA call of a few optimizer
steps of the workflow's trainer (the harness's model and rows), with the Python stack that made it.

torch's sync debug mode reports the implicit waits (`.item()`, a copy to the host, a pageable copy to the
GPU); explicit `torch.cuda.synchronize()` calls are counted by wrapping it. A wait drains the GPU's
queue, and the GPU then idles until the CPU has queued work again.

    python benchmarks/sync_debug.py --shape 0.5b --config workflow --json sync_debug.json
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import torch
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import config_spec, harness_trainer, harness_training, qwen_tokenizer  # noqa: E402

SKIP = ("warnings.py", "sync_debug.py", "/torch/cuda/__init__.py")


def caller_stack(limit: int = 10) -> tuple[str, ...]:
    frames = [f for f in traceback.extract_stack() if not f.filename.endswith(SKIP)]
    return tuple(f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.lineno} {f.name}" for f in frames[-limit:])


class Watch(TrainerCallback):
    """Counts the waits from the first counted step's beginning to the end of training."""

    def __init__(self, first: int):
        self.first, self.on, self.waits = first, False, collections.Counter()

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.first and not self.on:
            self.on = True
            torch.cuda.set_sync_debug_mode("warn")

    def record(self, kind: str) -> None:
        if self.on:
            self.waits[(kind, caller_stack())] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="0.5b")
    parser.add_argument("--config", default="workflow")
    parser.add_argument("--steps", type=int, default=2, help="steps counted, after 2 warm-up steps")
    parser.add_argument("--json", required=True, type=Path)
    args = parser.parse_args()
    spec = config_spec(args.shape, args.config)
    watch = Watch(first=3)
    synchronize = torch.cuda.synchronize

    def counted_synchronize(*a, **k):
        watch.record("torch.cuda.synchronize")
        return synchronize(*a, **k)

    torch.cuda.synchronize = counted_synchronize
    shown = warnings.showwarning

    def show(message, category, *rest, **kw):
        if "synchronizing" in str(message):
            watch.record("implicit: " + str(message).splitlines()[0][:80])
        else:
            shown(message, category, *rest, **kw)

    warnings.showwarning = show
    warnings.simplefilter("always")
    with tempfile.TemporaryDirectory() as tmp:
        _, trainer = harness_trainer(args.shape, spec["sizing"], harness_training(spec), 2 + args.steps, Path(tmp),
                                     qwen_tokenizer(), [watch])
        trainer.train()
    torch.cuda.set_sync_debug_mode(0)
    rows = sorted(({"kind": kind, "per_step": count / args.steps, "stack": list(stack)}
                   for (kind, stack), count in watch.waits.items()), key=lambda r: -r["per_step"])
    args.json.write_text(json.dumps({"shape": args.shape, "config": args.config, "steps": args.steps,
                                     "waits_per_step": sum(r["per_step"] for r in rows), "sites": rows}, indent=1))
    print(f"{args.shape} {args.config}: {sum(r['per_step'] for r in rows):.0f} waits per step")
    for row in rows[:15]:
        print(f"{row['per_step']:7.1f}  {row['kind']}\n         " + "\n         ".join(row["stack"][-5:]))


if __name__ == "__main__":
    main()
