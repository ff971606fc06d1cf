"""The hashed sampler's kernel on a GPU (sublim.hashed_noise): does the Triton kernel compute the
torch arithmetic the CPU tests check, and what does one sampling step's noise cost against vLLM's
per-request generators at the workflow's batch (512 rows of Qwen2.5's 151,936 logits)?

    python benchmarks/check_hashed_noise.py --json results/hashed_noise_h200.json

vLLM's path is its own `random_sample` (vllm.v1.sample.ops.topk_topp_sampler) with one seeded
torch.Generator per row, as its sampler runs it for per-request seeds; ours is add_gumbel_ then the
argmax vLLM's greedy path takes. Both are timed with CUDA events over --steps steps after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from check_varlen import timed as timed_ms  # noqa: E402  (CUDA-event ms per call after a warm-up)
from sublim import hashed_noise  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    device = torch.device("cuda")
    generator = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(args.rows, args.vocab, device=device, generator=generator)
    rows = torch.arange(args.rows, device=device)
    seeds = torch.randint(0, 2**31 - 1, (args.rows,), device=device, generator=generator)
    positions = torch.randint(0, 128, (args.rows,), device=device, generator=generator)
    inverse = torch.ones(args.rows, device=device)

    kernel = logits.clone()
    hashed_noise.add_gumbel_(kernel, rows, seeds, positions, inverse)
    reference = logits + hashed_noise.gumbel_noise(seeds, positions, args.vocab)
    difference = (kernel - reference).abs().max().item()
    same_argmax = (kernel.argmax(1) == reference.argmax(1)).float().mean().item()

    from vllm.v1.sample.ops.topk_topp_sampler import random_sample

    generators = {i: torch.Generator(device=device).manual_seed(i) for i in range(args.rows)}

    def vllm_step():
        random_sample(logits.softmax(dim=-1, dtype=torch.float32), generators)

    def hashed_step():
        hashed_noise.add_gumbel_(logits.clone(), rows, seeds, positions, inverse).argmax(dim=-1)

    def unseeded_step():
        random_sample(logits.softmax(dim=-1, dtype=torch.float32), {})

    record = {"gpu": torch.cuda.get_device_name(), "rows": args.rows, "vocab": args.vocab,
              "kernel_vs_torch_max_abs_difference": difference, "kernel_vs_torch_same_argmax": same_argmax,
              "per_step_ms": {"vllm_per_request_generators": timed_ms(vllm_step, args.steps),
                              "hashed_noise_and_argmax": timed_ms(hashed_step, args.steps),
                              "vllm_unseeded": timed_ms(unseeded_step, args.steps)},
              "torch": torch.__version__}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1))
    print(json.dumps(record))


if __name__ == "__main__":
    main()
