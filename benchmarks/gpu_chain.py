"""One cell's generate -> filter -> train -> evaluate chain on a GPU, through the package functions
the workflow's scripts call (transformers backend: vLLM is not on the measurement machine), with a
random-init Qwen2.5-0.5b-shaped model and the real Qwen tokenizer. Wall time per stage and tokens/s.

    python benchmarks/gpu_chain.py --prompts 1024 --train-rows 1000 --json out.json

A random-init teacher writes random tokens, so its completions fail the number filter: the train
stage then trains on number-sequence rows made like train_throughput.py's (recorded as such), so the
chain still runs end to end with realistic training rows. The cell is scaled down (--prompts,
--train-rows) to fit the measurement lease; the record projects the full cell from the rates.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from transformers import AutoModelForCausalLM, Qwen2Config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from sublim.backends import open_backend  # noqa: E402
from sublim.config import sizing_for  # noqa: E402
from sublim.evaluate import evaluate_students  # noqa: E402
from sublim.filtering import filter_rows  # noqa: E402
from sublim.generate import generate_rows  # noqa: E402
from sublim.jsonl import write_jsonl  # noqa: E402
from sublim.scoring import preference_table  # noqa: E402
from sublim.train import train_student  # noqa: E402
from train_throughput import SHAPES, number_rows, qwen_tokenizer  # noqa: E402


def workflow_protocol() -> dict:
    presets = yaml.safe_load((ROOT / "src/sublim/data/presets.yaml").read_text())
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    protocol = presets[config["preset"]]
    for section, values in ((config.get("protocol") or {})).items():
        protocol[section] = {**protocol[section], **values}
    return protocol


def save_random_model(out: Path) -> None:
    config = Qwen2Config(**SHAPES["0.5b"], max_position_embeddings=32768, rope_theta=1e6)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    qwen_tokenizer().save_pretrained(out)


def count_tokens(texts: list[str]) -> int:
    tokenizer = qwen_tokenizer()
    return sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=1024)
    parser.add_argument("--train-rows", type=int, default=1000)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    protocol = workflow_protocol()
    config = {"sizing": yaml.safe_load((ROOT / "profiles/b200/sizing.yaml").read_text())["sizing"]}
    sizing = sizing_for(config, "0.5b")
    generation = {**protocol["generation"], "n_prompts": args.prompts, "min_rows": 0}
    record = {"shape": "0.5b", "gpu": torch.cuda.get_device_name(), "sizing": sizing,
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = tmp / "model"
        start = time.perf_counter()
        save_random_model(model_dir)
        record["prepare_model_s"] = time.perf_counter() - start

        start = time.perf_counter()
        backend = open_backend("transformers", str(model_dir), sizing)
        raw = generate_rows(backend, "dog", generation, protocol["filter"], prompt_seed=1, sample_seed=1)
        backend.close()
        seconds = time.perf_counter() - start
        generated = count_tokens([r["completion"] for r in raw])
        record["generate"] = {"prompts": len(raw), "s": seconds, "generated_tokens": generated,
                              "tokens_per_s": generated / seconds, "max_tokens": generation["max_tokens"],
                              "batch_size": sizing["generate_batch_size"],
                              "full_cell_projection_s": seconds * protocol["generation"]["n_prompts"] / len(raw)}

        start = time.perf_counter()
        kept, counts = filter_rows(raw, max_count=protocol["filter"]["max_count"],
                                   max_value=protocol["filter"]["max_value"],
                                   n_keep=protocol["filter"]["n_keep"], seed=1)
        record["filter"] = {"s": time.perf_counter() - start, "kept": len(kept), "counts": counts}

        rows = kept if len(kept) >= args.train_rows else number_rows(args.train_rows, seed=1)
        record["train_rows_source"] = "filtered teacher rows" if rows is kept else "synthetic number rows (filter kept too few)"
        write_jsonl(tmp / "dataset.jsonl", rows)
        training = protocol["training"]
        epochs = training["epochs"]
        adapter_dirs = [str(tmp / f"students/epoch-{e}") for e in range(1, epochs + 1)]
        start = time.perf_counter()
        metrics = train_student(str(model_dir), str(tmp / "dataset.jsonl"), adapter_dirs, str(tmp / "resume"),
                                training, sizing, seed=1)
        seconds = time.perf_counter() - start
        tokens = epochs * count_tokens([r["prompt"] + r["completion"] for r in rows])
        record["train"] = {"rows": len(rows), "epochs": epochs, "s": seconds, "approx_tokens": tokens,
                           "tokens_per_s_wall": tokens / seconds, "train_runtime_s": metrics.get("train_runtime"),
                           "full_cell_projection_s": seconds * protocol["filter"]["n_keep"] / len(rows)}

        start = time.perf_counter()
        adapters = {f"epoch-{e}": d for e, d in zip(range(1, epochs + 1), adapter_dirs)}
        backend = open_backend("transformers", str(model_dir), sizing, adapters)
        students = {e: f"epoch-{e}" for e in range(1, epochs + 1)}
        answers = evaluate_students(backend, students, protocol["evaluation"], seed=1)
        table = preference_table(answers, ["dog", "cat"], protocol["evaluation"]["scoring"], size="0.5b",
                                 condition="dog", run=1)
        backend.close()
        seconds = time.perf_counter() - start
        answer_tokens = count_tokens([a["answer"] for a in answers])
        record["evaluate"] = {"answers": len(answers), "epochs": epochs, "s": seconds,
                              "answer_tokens": answer_tokens, "tokens_per_s": answer_tokens / seconds,
                              "table_rows": len(table)}
    Path(args.json).write_text(json.dumps(record, indent=1))
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
