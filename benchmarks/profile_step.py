"""Where one training step's GPU time goes: torch.profiler over a few optimizer steps of the train
stage (the harness's model, rows and trainer), CUDA kernels summed by name.

    python benchmarks/profile_step.py --shape 1.5b --config workflow --json profile.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, schedule
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import config_spec, harness_trainer, harness_training, qwen_tokenizer  # noqa: E402


class ProfilerStep(TrainerCallback):
    def __init__(self, profiler):
        self.profiler = profiler

    def on_step_end(self, args, state, control, **kwargs):
        self.profiler.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", required=True)
    parser.add_argument("--config", default="workflow")
    parser.add_argument("--active", type=int, default=3)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    spec = config_spec(args.shape, args.config)
    with tempfile.TemporaryDirectory() as tmp, profile(
            activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA],
            schedule=schedule(wait=2, warmup=1, active=args.active)) as profiler:
        _, trainer = harness_trainer(args.shape, spec["sizing"], harness_training(spec), 3 + args.active, Path(tmp),
                                     qwen_tokenizer(), [ProfilerStep(profiler)])
        trainer.train()
    # kernels, not the ops that launch them nor the GPU-side step annotations
    events = [e for e in profiler.key_averages()
              if e.device_type == DeviceType.CUDA and not e.key.startswith("ProfilerStep")]
    total_cuda = sum(e.self_device_time_total for e in events)
    rows = sorted(({"name": e.key, "cuda_ms_per_step": e.self_device_time_total / 1e3 / args.active,
                    "calls_per_step": e.count / args.active, "share": e.self_device_time_total / total_cuda}
                   for e in events if e.self_device_time_total > 0), key=lambda r: -r["cuda_ms_per_step"])
    steps = [e for e in profiler.key_averages() if e.key.startswith("ProfilerStep")]
    record = {"shape": args.shape, "config": args.config, "cuda_ms_per_step": total_cuda / 1e3 / args.active,
              "wall_ms_per_step": (sum(e.cpu_time_total for e in steps) / 1e3 / args.active) if steps else None,
              "kernels": rows[: args.top],
              "ops": profiler.key_averages().table(sort_by="device_time_total", row_limit=args.top)}
    Path(args.json).write_text(json.dumps(record, indent=1))
    print(f"{args.shape} {args.config}: GPU busy {record['cuda_ms_per_step']:.1f} ms/step, "
          f"wall {record['wall_ms_per_step']} ms/step")
    for r in rows[: args.top]:
        print(f"{r['cuda_ms_per_step']:8.2f} ms {r['share']:6.1%} {r['calls_per_step']:7.0f}x  {r['name'][:110]}")
    print(record["ops"])


if __name__ == "__main__":
    main()
