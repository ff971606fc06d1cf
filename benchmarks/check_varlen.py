"""On a GPU: torch's FlashAttention varlen (the `sublim_varlen` path) computes the same function as
row-by-row causal sdpa, in bf16, on packed batches shaped like the experiment's (60 rows of
~100-180 tokens) for each Qwen2.5 head layout, with the key/value heads passed as they are (GQA);
and how long each takes. Then the shared-prefix layout (sublim.shared_prefix, 23 shared tokens): the
queries in place and the whole rows' keys and values gathered, against the float64 reference of the
whole rows, and its forward + backward time against the layout until the thirteenth session (queries,
keys and values gathered, keys and values repeated to the query heads, outputs gathered back).

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
from sublim.shared_prefix import share_prefix  # noqa: E402

LAYOUTS = {"0.5b": (14, 2, 64), "1.5b": (12, 2, 128), "3b": (16, 2, 128), "7b": (28, 4, 128), "14b": (40, 8, 128),
           "32b": (40, 8, 128)}
# a micro-batch's rows as profiles/b200 trains them (32b: 30 x 2), and the rows' shared opening
MICRO_ROWS = {"32b": 30}
PREFIX = 23


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
    for shape, (heads, kv_heads, dim) in LAYOUTS.items():
        record = shared_prefix_layout(shape, heads, kv_heads, dim)
        records.append(record)
        print(json.dumps(record), flush=True)
        assert record["rel_error_vs_fp64"] < 2e-2 and record["grad_rel_error_vs_fp64"] < 5e-2, \
            f"{shape}: the shared-prefix layout differs from the whole rows"
    Path(args.json).write_text(json.dumps(records, indent=1))


def shared_prefix_layout(shape: str, heads: int, kv_heads: int, dim: int) -> dict:
    rows = MICRO_ROWS.get(shape, 60)
    lengths = torch.randint(115, 161, (rows,)).tolist()
    # rows that open alike for PREFIX + 1 tokens (the last one is predicted, so PREFIX are shared), laid
    # out by the workflow's own collator step
    opening = torch.arange(1, PREFIX + 2)
    ids = [torch.cat([opening, torch.randint(1000, 2000, (n - PREFIX - 1,))]) for n in lengths]
    cu_k = torch.tensor([0] + lengths).cumsum(0).to(torch.int32)
    labels = [torch.cat([torch.tensor([-100]), row[1:]]) for row in ids]  # each row's first has none
    shared = share_prefix({"input_ids": torch.cat(ids)[None], "labels": torch.cat(labels)[None],
                           "cu_seq_lens_q": cu_k, "max_length_q": max(lengths)})
    assert shared["shared_prefix_length"] == PREFIX, shared["shared_prefix_length"]
    expand, cu_q, cu_k = (shared[key].cuda() for key in
                          ("shared_prefix_expand", "shared_prefix_cu_seq_q", "cu_seq_lens_q"))
    own = cu_q.diff().tolist()  # each row's queries in the shared layout
    output = torch.cat([torch.arange(end - n, end) for end, n in zip(cu_k[1:].tolist(), own)]).cuda()
    total = shared["input_ids"].shape[1]
    q = torch.randn(total, heads, dim, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(total, kv_heads, dim, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(total, kv_heads, dim, device="cuda", dtype=torch.bfloat16)
    max_q, max_k = shared["shared_prefix_max_q"], max(lengths)

    def queries_in_place(q, k, v):
        return varlen_attention(q, k.index_select(0, expand), v.index_select(0, expand), cu_q, max_q,
                                use_flash=True, cu_seq_k=cu_k, max_len_k=max_k)

    def gathered(q, k, v, use_flash=True):
        q, k, v = (t.index_select(0, expand) for t in (q, k, v))
        if use_flash and "enable_gqa" not in _VARLEN_PARAMS:
            k, v = (t.repeat_interleave(heads // kv_heads, dim=1) for t in (k, v))
        return varlen_attention(q, k, v, cu_k, max_k, use_flash=use_flash).index_select(0, output)

    tensors = [t.clone().requires_grad_() for t in (q, k, v)]
    queries_in_place(*tensors).float().square().sum().backward()
    reference = [t.double().requires_grad_() for t in (q, k, v)]
    expected = gathered(*reference, use_flash=False)
    expected.square().sum().backward()
    error = ((queries_in_place(q, k, v).double() - expected).norm() / expected.norm()).item()
    grad_error = max(((a.grad.double() - b.grad).norm() / b.grad.norm()).item() for a, b in zip(tensors, reference))
    grad_out = torch.randn_like(q)

    def step(attend):
        inputs = [t.detach().requires_grad_() for t in (q, k, v)]
        attend(*inputs).backward(grad_out)

    return {"shape": shape, "layout": "shared prefix", "rows": rows, "prefix": PREFIX, "tokens": total,
            "whole_row_tokens": sum(lengths), "heads": heads, "kv_heads": kv_heads, "head_dim": dim,
            "rel_error_vs_fp64": error, "grad_rel_error_vs_fp64": grad_error,
            "queries_in_place_fwd_bwd_ms": timed(lambda: step(queries_in_place)),
            "gathered_fwd_bwd_ms": timed(lambda: step(gathered)),
            "varlen_params": sorted(_VARLEN_PARAMS), "gpu": torch.cuda.get_device_name(), "torch": torch.__version__}


if __name__ == "__main__":
    main()
