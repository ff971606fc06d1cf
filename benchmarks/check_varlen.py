"""On a GPU: torch's FlashAttention varlen (the `sublim_varlen` path) computes the same function as
row-by-row causal sdpa, in bf16, on packed batches shaped like the experiment's (60 rows of
~100-180 tokens) for each Qwen2.5 head layout; and how long each takes.

    python benchmarks/check_varlen.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from sublim.attention import _VARLEN_PARAMS, varlen_attention  # noqa: E402

LAYOUTS = {"0.5b": (14, 2, 64), "1.5b": (12, 2, 128), "7b": (28, 4, 128), "14b": (40, 8, 128)}


def timed(fn, repeats: int = 20) -> float:
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    records = []
    for shape, (heads, kv_heads, dim) in LAYOUTS.items():
        lengths = torch.randint(100, 181, (60,))
        cu_seq = torch.cat([torch.zeros(1, dtype=torch.int32), lengths.cumsum(0).to(torch.int32)]).cuda()
        total, longest = int(lengths.sum()), int(lengths.max())
        q = torch.randn(total, heads, dim, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(total, kv_heads, dim, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(total, kv_heads, dim, device="cuda", dtype=torch.bfloat16)
        flash = varlen_attention(q, k, v, cu_seq, longest, use_flash=True)
        reference = varlen_attention(q.double(), k.double(), v.double(), cu_seq, longest, use_flash=False)
        error = ((flash.double() - reference).norm() / reference.norm()).item()
        # the backward too: gradients through the custom op against the float64 reference
        qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
        varlen_attention(qg, kg, vg, cu_seq, longest, use_flash=True).float().square().sum().backward()
        qr, kr, vr = (t.double().requires_grad_() for t in (q, k, v))
        varlen_attention(qr, kr, vr, cu_seq, longest, use_flash=False).square().sum().backward()
        grad_error = max(((a.grad.double() - b.grad).norm() / b.grad.norm()).item()
                         for a, b in ((qg, qr), (kg, kr), (vg, vr)))
        record = {
            "shape": shape, "tokens": total, "heads": heads, "kv_heads": kv_heads, "head_dim": dim,
            "rel_error_vs_fp64": error, "grad_rel_error_vs_fp64": grad_error,
            "flash_varlen_ms": timed(lambda: varlen_attention(q, k, v, cu_seq, longest, use_flash=True)),
            "rowwise_sdpa_ms": timed(lambda: varlen_attention(q, k, v, cu_seq, longest, use_flash=False), 5),
            "varlen_params": sorted(_VARLEN_PARAMS), "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
        }
        records.append(record)
        print(json.dumps(record), flush=True)
        assert error < 2e-2 and grad_error < 5e-2, f"{shape}: varlen differs from the reference"
    Path(args.json).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
