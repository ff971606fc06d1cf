"""sublim.fused_lora's adapter gradients on a GPU: float32 out of the GEMM, later micro-batches summed in it.

On CUDA the fused LoRA layers ask torch's mm/addmm for float32 output from bf16 factors (`out_dtype`),
and a step's second micro-batch adds its gradient into the first one's inside the GEMM (the output
aliasing the addend). Neither runs on a CPU, so tests/test_fused_lora.py cannot reach them. This
script runs a small Qwen2 with PEFT's LoRA (rank 8, the seven projections, two layers) on the GPU
under bf16 autocast, two micro-batches per step, and compares every adapter gradient with float64
arithmetic for: PEFT's own layers, the fused layers as they were (bf16 gradients cast, autograd's
sum; the harness switch cast_lora_grads) and as they are. It fails (exit 1) if the fused layers are
further off than PEFT's, or if the in-place sum is not the sum of the two micro-batches.

    python benchmarks/check_lora_grads.py --json lora_grads_check.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from peft import get_peft_model  # noqa: E402
from transformers import Qwen2Config, Qwen2ForCausalLM, set_seed  # noqa: E402

from sublim import fused_lora  # noqa: E402
from sublim.train import lora_config  # noqa: E402
from train_throughput import cast_lora_grads  # noqa: E402  (the harness's switch for the old backward)

LORA = {"r": 8, "alpha": 8, "dropout": 0.0,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


def lora_model(dtype: torch.dtype, alpha: float):
    set_seed(0)
    config = Qwen2Config(vocab_size=512, hidden_size=256, intermediate_size=640, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    model = get_peft_model(Qwen2ForCausalLM._from_config(config, dtype=dtype), lora_config({**LORA, "alpha": alpha}))
    for module in model.modules():  # a trained-looking adapter: lora_B's path is not all zeros
        if hasattr(module, "lora_B"):
            torch.nn.init.normal_(module.lora_B["default"].weight, std=0.05)
    return model.cuda()


def step_grads(model, batches, autocast: bool) -> dict:
    model.zero_grad()
    for input_ids in batches:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            model(input_ids=input_ids, labels=input_ids).loss.backward()
    return {k: v.grad.double().clone() for k, v in model.named_parameters() if v.grad is not None}


def relative_error(value, reference) -> float:
    return float((value - reference).abs().max() / reference.abs().max())


def check(alpha: float) -> dict:
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 512, (6, 96), generator=generator).cuda() for _ in range(2)]
    exact = step_grads(lora_model(torch.float32, alpha).double(), batches, autocast=False)  # the same weights
    model = lora_model(torch.float32, alpha)
    peft = step_grads(model, batches, autocast=True)
    layers = fused_lora.fuse(model)
    with cast_lora_grads():
        fused_before = step_grads(model, batches, autocast=True)
    fused = step_grads(model, batches, autocast=True)
    fused_lora.forget_casts(layers)
    fused_lora.unfuse(layers)
    names = sorted(exact)
    worst = {label: max(relative_error(grads[n], exact[n]) for n in names)
             for label, grads in (("peft", peft), ("fused_cast_bf16_grads", fused_before), ("fused", fused))}
    mean = {label: sum(relative_error(grads[n], exact[n]) for n in names) / len(names)
            for label, grads in (("peft", peft), ("fused_cast_bf16_grads", fused_before), ("fused", fused))}
    return {"alpha": alpha, "scaling": alpha / LORA["r"], "adapter_tensors": len(names),
            "max_relative_error_vs_float64": worst, "mean_relative_error_vs_float64": mean,
            "ok": worst["fused"] <= 1.5 * worst["peft"] + 1e-3}


def in_place_sum() -> dict:
    """addmm into the held float32 gradient (output aliasing the addend) against two separate GEMMs."""
    generator = torch.Generator().manual_seed(1)
    m1, m2, n1, n2 = (torch.randn(shape, generator=generator).to("cuda", torch.bfloat16)
                      for shape in ((8, 4096), (4096, 5120), (8, 4096), (4096, 5120)))
    param = torch.nn.Parameter(torch.zeros(8, 5120, device="cuda"))
    first = fused_lora.weight_grad(m1, m2, param)
    param.grad = first
    handed_back = fused_lora.weight_grad(n1, n2, param)
    expected = torch.mm(m1, m2, out_dtype=torch.float32) + torch.mm(n1, n2, out_dtype=torch.float32)
    error = relative_error(param.grad.double(), expected.double())
    return {"first_dtype": str(first.dtype), "second_handed_back": handed_back is not None,
            "same_tensor": param.grad is first, "relative_error_vs_two_gemms": error,
            "ok": first.dtype == torch.float32 and handed_back is None and param.grad is first and error < 1e-6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("check_lora_grads.py needs a CUDA GPU: the float32 GEMM output it checks is CUDA only")
    record = {"checks": [check(16), check(8)], "in_place_sum": in_place_sum(),
              "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    record["ok"] = all(c["ok"] for c in record["checks"]) and record["in_place_sum"]["ok"]
    Path(args.json).write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))
    sys.exit(0 if record["ok"] else 1)


if __name__ == "__main__":
    main()
