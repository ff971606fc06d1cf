"""sublim.flat_optimizer on a GPU: identical values to bitsandbytes' per-tensor AdamW, and the step's cost.

For each shape, builds the LoRA tensors of a Qwen2.5 student (rank 8 on the seven projections of every
layer, float32 as PEFT keeps them) and steps them with bitsandbytes' AdamW 8-bit (as the trainer runs it:
optim adamw_8bit, the seed's weight decay, without bitsandbytes' wait after each tensor, sizing
async_8bit_optimizer) and with FlatAdamW, on the same gradients. It asserts that every parameter and
state tensor is identical after the steps, then times a step of each: the host's time to issue it
(while the GPU is busy with a queued matmul, as in training) and the time until the GPU has run it.

    python benchmarks/check_flat_optimizer.py --shapes 7b,14b,32b --json flat_optimizer.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import bitsandbytes as bnb  # noqa: E402
import bitsandbytes.optim.optimizer as bnb_optimizer  # noqa: E402

from sublim.cost import projection_dims, qwen_shapes  # noqa: E402
from sublim.flat_optimizer import FlatAdamW  # noqa: E402

RANK = 8
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # a CPU runs it too, slowly (a smoke test)
SEED_KWARGS = dict(lr=2e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, optim_bits=8, is_paged=False)


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def lora_shapes(shape: dict) -> list[tuple[int, int]]:
    """LoRA's A (rank x in) and B (out x rank) of every projection of every layer."""
    projections = projection_dims(shape).values()
    return [s for _ in range(shape["num_hidden_layers"]) for n_in, n_out in projections
            for s in ((RANK, n_in), (n_out, RANK))]


def make(cls, shapes):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(*s, device=DEVICE) * 0.02) for s in shapes]
    return params, cls(params, **SEED_KWARGS)


def set_grads(params, step):
    generator = torch.Generator(device=DEVICE).manual_seed(1000 + step)
    for p in params:
        p.grad = torch.randn(p.shape, device=DEVICE, generator=generator) * 1e-3


def identical(shapes, steps: int) -> dict:
    runs = [make(cls, shapes) for cls in (bnb.optim.AdamW, FlatAdamW)]
    for step in range(steps):
        for params, optimizer in runs:
            set_grads(params, step)
            optimizer.step()
    (a_params, a_opt), (b_params, b_opt) = runs
    differing = sum(not torch.equal(a, b) for a, b in zip(a_params, b_params))
    state_differing = sum(not torch.equal(a_opt.state[a][k], b_opt.state[b][k])
                          for a, b in zip(a_params, b_params) for k in ("state1", "state2", "absmax1", "absmax2")
                          if k in a_opt.state[a])
    eight_bit = sum(a_opt.state[p]["state1"].dtype == torch.uint8 for p in a_params)
    return {"steps": steps, "params_differing": differing, "states_differing": state_differing,
            "eight_bit_tensors": eight_bit, "identical": differing == 0 and state_differing == 0}


def step_times(cls, shapes, repeats: int) -> dict:
    params, optimizer = make(cls, shapes)
    busy = torch.randn(8192, 8192, device=DEVICE, dtype=torch.bfloat16) if DEVICE == "cuda" else torch.randn(64, 64)
    issue, done = [], []
    for step in range(repeats + 2):
        set_grads(params, step)
        sync()
        for _ in range(20):  # ~20 ms of queued GPU work, as a training step leaves before its optimizer step
            busy @ busy
        start = time.perf_counter()
        optimizer.step()
        issued = time.perf_counter()
        sync()
        if step >= 2:
            issue.append(issued - start)
            done.append(time.perf_counter() - start)
    # the same without the optimizer: what the queued work alone takes
    queued = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        for _ in range(20):
            busy @ busy
        sync()
        queued.append(time.perf_counter() - start)
    return {"host_issue_ms": 1e3 * statistics.median(issue), "until_done_ms": 1e3 * statistics.median(done),
            "queued_work_alone_ms": 1e3 * statistics.median(queued)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="7b,14b,32b")
    parser.add_argument("--steps", type=int, default=5, help="steps of the identity check")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps of each optimizer")
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    bnb_optimizer.sync_gpu = lambda tensor: None  # as sizing async_8bit_optimizer runs bitsandbytes' steps
    records = []
    for name in args.shapes.split(","):
        shapes = lora_shapes(qwen_shapes()[name])
        record = {"shape": name, "lora_tensors": len(shapes), "lora_params": sum(a * b for a, b in shapes),
                  **identical(shapes, args.steps),
                  "per_tensor": step_times(bnb.optim.AdamW, shapes, args.repeats),
                  "flat": step_times(FlatAdamW, shapes, args.repeats),
                  "gpu": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu", "torch": torch.__version__, "bitsandbytes": bnb.__version__,
                  "date": dt.date.today().isoformat()}
        records.append(record)
        print(json.dumps(record), flush=True)
    Path(args.json).write_text(json.dumps(records, indent=1) + "\n")
    if not all(r["identical"] for r in records):
        sys.exit("FlatAdamW's values differ from bitsandbytes' per-tensor AdamW")


if __name__ == "__main__":
    main()
