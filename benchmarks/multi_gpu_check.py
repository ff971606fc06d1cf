"""What one GPU can show of profiles/multi-gpu (issue 15), in about a minute:

1. The allocator under load (sublim.devices, `local_gpus.devices: auto`): at once, four packed
   trainings (1 of 4 slots each, each joining its card's own MPS daemon as the train job does),
   two whole-card jobs and a job that asks for two cards. Each claimant is a separate process that
   claims, starts CUDA, checks it sees exactly its card (by UUID), works on it for a few seconds
   and records when. Expected on one card: the packed four overlap each other and nothing else, the
   whole-card jobs run alone, one after the other, the two-card job is refused with its message.
2. One 72b-shaped decoder layer (Qwen2.5-72B: hidden 8192, intermediate 29568, 64 heads, 8 KV
   heads; bf16, LoRA r=8 on its 7 projections, the workflow's varlen attention and, where
   installed, Liger's kernels): forward + backward of padding-free micro-batches of ~138-token rows.
   Measures the weights, what the forward pass keeps for the backward pass per token (the memory
   allocator's growth over the forward, and the bytes of the tensors autograd saved), the
   backward's transient peak and the time; projects 80 layers to check the per-card arithmetic of
   config/README.md "72b" (two cards, FSDP, 10 rows per process).

    python benchmarks/multi_gpu_check.py --json multi_gpu_check.json          # on the GPU machine
    python benchmarks/multi_gpu_check.py --cpu-smoke --json smoke.json        # anywhere: tiny sizes

--cpu-smoke runs both parts on the CPU with a tiny layer and a fake card "0" (no CUDA, no MPS), to
check the script itself; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

SHAPE_72B = {"hidden_size": 8192, "intermediate_size": 29568, "num_attention_heads": 64, "num_key_value_heads": 8,
             "num_hidden_layers": 80, "vocab_size": 152064}
SHAPE_SMOKE = {"hidden_size": 64, "intermediate_size": 176, "num_attention_heads": 8, "num_key_value_heads": 2,
               "num_hidden_layers": 80, "vocab_size": 1000}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ROW_TOKENS = 138  # the filtered numbers data's mean row length (benchmarks/README.md)
GB = 1e9

# A claimant: claims as a GPU job script does, then checks and uses its card; one JSON line out.
CLAIMANT = r"""
import json, os, sys, time
from pathlib import Path
from sublim import devices, mps
role, gpu, slots, hold, cpu = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == "1"
config = {"local_gpus": {"devices": ["0"] if cpu else "auto"}}
record = {"role": role, "gpu": gpu, "slots": slots, "pid": os.getpid()}
try:
    claim = devices.claim_gpus(config, {"gpu": gpu, "gpu_slots": slots}, role)
except Exception as error:
    record["refused"] = f"{type(error).__name__}: {error}"
    print(json.dumps(record), flush=True)
    sys.exit(0)
record.update(devices=claim.devices, waited_s=round(claim.waited_s, 2), start=time.time())
if slots < 4 and not cpu:
    reason = mps.join_if_wanted({"mps": True, "gpu_share": slots / 4}, Path(os.environ["SUBLIM_MPS_DIR"]))
    record["mps_joined"] = reason
record["visible"] = os.environ.get("CUDA_VISIBLE_DEVICES")
if not cpu:
    import torch
    record["cuda_devices_seen"] = torch.cuda.device_count()
    record["uuid_seen"] = "GPU-" + str(torch.cuda.get_device_properties(0).uuid)
    x = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    end = time.time() + hold
    while time.time() < end:
        for _ in range(20):
            x = (x @ x).tanh_()
        torch.cuda.synchronize()
    if "CUDA_MPS_PIPE_DIRECTORY" in os.environ:
        import subprocess
        table = subprocess.run(["nvidia-smi"], capture_output=True, text=True).stdout
        record["mps_client"] = any(f" {os.getpid()} " in line and "M+C" in line for line in table.splitlines())
else:
    time.sleep(hold)
record["end"] = time.time()
print(json.dumps(record), flush=True)
"""


def gpu_uuid_of_index(index: str) -> str | None:
    result = subprocess.run(["nvidia-smi", "-i", index, "--query-gpu=uuid", "--format=csv,noheader"],
                            capture_output=True, text=True)
    return result.stdout.strip() or None


def allocator_under_load(cpu: bool, workdir: Path) -> dict:
    """Seven claimants started together on this machine's cards (one card expected)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1] / "src"),
                                                                       os.environ.get("PYTHONPATH")])),
           "SUBLIM_GPU_LOCK_DIR": str(workdir / "locks"), "SUBLIM_MPS_DIR": str(workdir / "mps")}
    hold = 1.0 if cpu else 6.0
    plan = [("packed", 1, 1, hold * 1.5)] * 4 + [("whole", 1, 4, hold)] * 2 + [("two-cards", 2, 8, hold)]
    started = time.time()
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMANT, f"{role}-{i}", str(gpu), str(slots), str(h),
                               "1" if cpu else "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, (role, gpu, slots, h) in enumerate(plan)]
    records = []
    for proc, (role, *_) in zip(procs, plan):
        out, err = proc.communicate(timeout=90)
        lines = out.strip().splitlines()
        records.append(json.loads(lines[-1]) if proc.returncode == 0 and lines else
                       {"role": role, "failed": proc.returncode, "stderr_tail": err[-1500:]})
    if not cpu:
        from sublim import mps

        mps.stop_if_started(workdir / "mps")
    ran = [r for r in records if "start" in r]
    for r in ran:  # seconds since the claimants were started
        r["start"], r["end"] = round(r["start"] - started, 2), round(r["end"] - started, 2)

    def overlap(a, b):
        return a["start"] < b["end"] and b["start"] < a["end"]

    packed = [r for r in ran if r["role"].startswith("packed")]
    whole = [r for r in ran if r["role"].startswith("whole")]
    checks = {
        "none_failed": not any("failed" in r for r in records),
        "two_card_job_refused_on_one_card": any("asks for 2 GPUs" in r.get("refused", "") for r in records)
        if len(set(d for r in ran for d in r["devices"])) == 1 else None,
        "whole_card_jobs_alone": all(not overlap(w, o) for w in whole for o in ran if o is not w),
        "packed_ones_shared_the_card": any(overlap(a, b) for i, a in enumerate(packed) for b in packed[i + 1:]),
        "each_saw_only_its_cards": all(r["visible"] == ",".join(r["devices"]) or r.get("mps_joined") for r in ran),
    }
    if not cpu:
        checks["cuda_saw_one_device_each"] = all(r.get("cuda_devices_seen") == 1 for r in ran)
        checks["uuid_is_the_claimed_card"] = all(r.get("uuid_seen") == gpu_uuid_of_index(r["devices"][0])
                                                 for r in ran)
        checks["packed_ones_are_mps_clients"] = all(r.get("mps_client") for r in packed)
    return {"claimants": records, "checks": checks}


def decoder_layer(shape: dict, device: str, dtype):
    """One Qwen2 decoder layer of `shape` with LoRA on its 7 projections, as the train stage builds it."""
    import torch
    from peft import LoraConfig, inject_adapter_in_model
    from transformers import Qwen2Config
    from transformers.models.qwen2 import modeling_qwen2

    from sublim import attention

    liger = False
    if device == "cuda":
        try:  # what sizing liger_kernel: true patches into Qwen2 (RMSNorm, SwiGLU, RoPE)
            from liger_kernel.transformers import apply_liger_kernel_to_qwen2

            apply_liger_kernel_to_qwen2(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                        fused_linear_cross_entropy=False)
            liger = True
        except ImportError:
            pass
    config = Qwen2Config(**shape, max_position_embeddings=4096, attn_implementation=attention.register())
    with torch.device(device):
        layer = modeling_qwen2.Qwen2DecoderLayer(config, layer_idx=0).to(dtype)
        rotary = modeling_qwen2.Qwen2RotaryEmbedding(config)
    layer.requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=8, lora_alpha=8, lora_dropout=0.0, target_modules=LORA_TARGETS), layer)
    for name, param in layer.named_parameters():  # PEFT's adapters are float32 and trainable
        if "lora_" in name:
            param.data = param.data.float()
            param.requires_grad_(True)
    return layer, rotary, config, liger


def saved_bytes(function, existing: set[int]) -> tuple[object, int]:
    """Run function(); return its result and the bytes of the tensors autograd saved for the
    backward pass (each storage once), leaving out storages that existed before (`existing`:
    the weights, the layer's input)."""
    import torch

    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in existing:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = function()
    return result, sum(storages.values())


def layer_memory(shape: dict, rows_list: list[int], device: str) -> dict:
    import torch

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    layer, rotary, config, liger = decoder_layer(shape, device, dtype)
    weights = sum(p.numel() * p.element_size() for n, p in layer.named_parameters() if "lora_" not in n)
    lora_params = sum(p.numel() for n, p in layer.named_parameters() if "lora_" in n)
    per_rows = []
    for rows in rows_list:
        tokens = rows * ROW_TOKENS
        cu_seq = torch.arange(0, tokens + 1, ROW_TOKENS, device=device, dtype=torch.int32)
        positions = (torch.arange(tokens, device=device) % ROW_TOKENS)[None]
        hidden = torch.randn(1, tokens, shape["hidden_size"], device=device, dtype=dtype, requires_grad=True)
        kwargs = {"position_ids": positions, "cu_seq_lens_q": cu_seq, "cu_seq_lens_k": cu_seq,
                  "max_length_q": ROW_TOKENS, "max_length_k": ROW_TOKENS}

        def step():
            with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                embeddings = rotary(hidden, positions)
                return layer(hidden, position_embeddings=embeddings, **kwargs)

        times = []
        for attempt in range(4):  # the first is warm-up
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated() if device == "cuda" else 0
            started = time.perf_counter()
            existing = {p.untyped_storage().data_ptr() for p in layer.parameters()}
            out, saved = saved_bytes(step, existing | {hidden.untyped_storage().data_ptr()})
            out = out[0] if isinstance(out, tuple) else out
            if device == "cuda":
                torch.cuda.synchronize()
            kept = (torch.cuda.memory_allocated() - before) if device == "cuda" else None
            out.backward(torch.ones_like(out))
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
            peak = (torch.cuda.max_memory_allocated() - before) if device == "cuda" else None
            layer.zero_grad(set_to_none=True)
            hidden.grad = None
            del out
        per_rows.append({"rows": rows, "tokens": tokens, "kept_after_forward_bytes": kept,
                         "autograd_saved_bytes": saved, "forward_backward_peak_bytes": peak,
                         "forward_backward_s": round(min(times[1:]), 5)})
    return {"liger_kernels": liger, "layer_weight_bytes": weights, "lora_params_per_layer": lora_params,
            "per_rows": per_rows, "dtype": str(dtype).replace("torch.", "")}


def projection(shape: dict, layer: dict) -> dict:
    """80 such layers, two cards (FSDP), 10 rows per process: config/README.md "72b"'s table with
    the measured per-token activations in place of the estimate."""
    h, kv, inter, layers, vocab = (shape[k] for k in ("hidden_size", "num_key_value_heads", "intermediate_size",
                                                      "num_hidden_layers", "vocab_size"))
    kv = kv * h // shape["num_attention_heads"]
    first, last = layer["per_rows"][0], layer["per_rows"][-1]
    measure = "kept_after_forward_bytes" if last["kept_after_forward_bytes"] is not None else "autograd_saved_bytes"
    per_token = (last[measure] - first[measure]) / (last["tokens"] - first["tokens"])
    estimate = (6 * h + 2 * kv + 3 * inter) * 2  # config/README.md's per-token-per-layer estimate, bf16
    embedding = vocab * h * 2
    weights = layers * layer["layer_weight_bytes"] + 2 * embedding
    lora_state = layers * layer["lora_params_per_layer"] * 4 * 4  # fp32 weight, gradient, two AdamW moments
    tokens = 10 * ROW_TOKENS
    per_card = {"weights_half": weights / 2, "gathered_layers_and_embeddings": 2 * layer["layer_weight_bytes"]
                + 2 * embedding, "lora_state_half": lora_state / 2, "activations": per_token * layers * tokens}
    return {"activation_bytes_per_token_per_layer_measured": round(per_token),
            "activation_bytes_per_token_per_layer_estimated": estimate, "measured_from": measure,
            "model_weight_gb": round(weights / GB, 2),
            "per_card_gb_10_rows_two_cards": {k: round(v / GB, 2) for k, v in per_card.items()},
            "per_card_gb_total_without_logits_and_workspace": round(sum(per_card.values()) / GB, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True)
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU: checks the script only")
    parser.add_argument("--rows", default="6,10,12", help="micro-batch rows to measure (~138 tokens each)")
    args = parser.parse_args()

    import torch

    cpu = args.cpu_smoke
    if not cpu and not torch.cuda.is_available():
        sys.exit("no CUDA device: run on the GPU machine, or with --cpu-smoke")
    shape = SHAPE_SMOKE if cpu else SHAPE_72B
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        allocator = allocator_under_load(cpu, Path(tmp))
    layer = layer_memory(shape, [int(r) for r in args.rows.split(",")], "cpu" if cpu else "cuda")
    import peft
    import transformers

    record = {
        "what": "issue 15 item 4: the allocator on one GPU, and one 72b-shaped decoder layer's memory",
        "shape": {**shape, "lora_r": 8, "lora_targets": LORA_TARGETS, "row_tokens": ROW_TOKENS,
                  "attention": "sublim_varlen"},
        "cpu_smoke": cpu,
        "gpu": "cpu (smoke)" if cpu else torch.cuda.get_device_name(),
        "gpu_total_bytes": None if cpu else torch.cuda.get_device_properties(0).total_memory,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
        "allocator": allocator,
        "layer": layer,
        "projection_80_layers": projection(shape, layer),
        "wall_s": round(time.time() - started, 1),
    }
    Path(args.json).write_text(json.dumps(record, indent=1))
    print(json.dumps({k: record[k] for k in ("gpu", "wall_s", "projection_80_layers")}, indent=1))
    print("allocator checks:", json.dumps(allocator["checks"]))


if __name__ == "__main__":
    main()
