"""What the training step's matmuls alone reach on this GPU: the ceiling a LoRA step's MFU is read against.

A LoRA step over a frozen Qwen2.5 base is, in FLOPs, its decoder layers' seven projections forward
(x Wᵀ) and their input gradients backward (g W): 4·N FLOPs a token. This runs exactly those bf16
matmuls of one decoder layer (the shape's q, k, v, o, gate, up, down) at the token count of one of
the workflow's micro-batches, back to back, for `--seconds` of sustained load (the card's clocks
settle under it), and reports TFLOP/s for the set and for each matmul.

    python benchmarks/gemm_ceiling.py --shapes 32b:3300,14b:6600 --json gemm_ceiling.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

PEAK_BF16_FLOPS = 989e12  # the MFU denominator of train_throughput.py


def layer_matmuls(shape: dict, tokens: int, device: str) -> list[tuple[str, torch.Tensor, torch.Tensor, float]]:
    """(name, left, right, FLOPs) of one layer's forward and input-gradient matmuls."""
    hidden, inter = shape["hidden_size"], shape["intermediate_size"]
    kv = hidden // shape["num_attention_heads"] * shape["num_key_value_heads"]
    projections = {"q": (hidden, hidden), "k": (hidden, kv), "v": (hidden, kv), "o": (hidden, hidden),
                   "gate": (hidden, inter), "up": (hidden, inter), "down": (inter, hidden)}
    matmuls = []
    for name, (inp, out) in projections.items():
        weight = torch.randn(out, inp, device=device, dtype=torch.bfloat16) / inp ** 0.5
        x = torch.randn(tokens, inp, device=device, dtype=torch.bfloat16)
        g = torch.randn(tokens, out, device=device, dtype=torch.bfloat16)
        flops = 2.0 * tokens * inp * out
        matmuls.append((f"{name} forward", x, weight.t(), flops))
        matmuls.append((f"{name} input grad", g, weight, flops))
    return matmuls


def run_set(matmuls, seconds: float) -> tuple[float, int]:
    """Seconds per pass over the set, sustained for `seconds`; and the passes timed."""
    for left, right in ((m[1], m[2]) for m in matmuls):  # warm cuBLAS's heuristics
        left @ right
    torch.cuda.synchronize()
    passes, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            for _, left, right, _ in matmuls:
                left @ right
        torch.cuda.synchronize()
        passes += 10
    return (time.perf_counter() - start) / passes, passes


def each(matmuls, repeats: int = 50) -> list[dict]:
    rows = []
    for name, left, right, flops in matmuls:
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(repeats):
            left @ right
        end.record()
        torch.cuda.synchronize()
        seconds = begin.elapsed_time(end) / 1e3 / repeats
        rows.append({"matmul": name, "m_k_n": [left.shape[0], left.shape[1], right.shape[1]],
                     "ms": seconds * 1e3, "tflops": flops / seconds / 1e12})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="32b:3300,14b:6600",
                        help="SHAPE:TOKENS pairs; tokens = a micro-batch's computed tokens (rows x ~110 with the shared prefix)")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--json", required=True, type=Path)
    args = parser.parse_args()
    from sublim.cost import qwen_shapes
    from vllm_shapes import stamp

    records = []
    for item in args.shapes.split(","):
        name, tokens = item.split(":")
        matmuls = layer_matmuls(qwen_shapes()[name], int(tokens), "cuda")
        flops = sum(m[3] for m in matmuls)
        per_pass, passes = run_set(matmuls, args.seconds)
        record = stamp({"shape": name, "tokens": int(tokens), "sustained_s": args.seconds, "passes": passes,
                        "set_tflops": flops / per_pass / 1e12, "set_fraction_of_peak": flops / per_pass / PEAK_BF16_FLOPS,
                        "matmuls": each(matmuls)})
        records.append(record)
        print(json.dumps({k: record[k] for k in ("shape", "tokens", "set_tflops", "set_fraction_of_peak")}), flush=True)
        del matmuls
        torch.cuda.empty_cache()
    args.json.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
