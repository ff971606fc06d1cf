"""One cell's generate and evaluate stages on a named backend, writing the files the workflow's
scripts write. tests/test_vllm_backend.py runs it in-process for transformers and, for vLLM, as
`.venv-vllm/bin/python tests/vllm_cell.py SPEC.json` (vLLM lives in its own environment).

Like the workflow, each stage opens its own engine and closes it; the main guard matters because
vLLM starts its engine process with `spawn`, which re-imports the main module.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from sublim.backends import explain_oom, open_backend
from sublim.evaluate import evaluate_students
from sublim.generate import generate_rows
from sublim.jsonl import write_json, write_jsonl
from sublim.p_animal import answer_probabilities, cell_table
from sublim.provenance import write_provenance
from sublim.scoring import preference_table, with_parsed_animal


def timed(timings: dict, key: str, action):
    start = time.perf_counter()
    result = action()
    timings[key] = round(time.perf_counter() - start, 2)
    return result


def prompt_ids_both_ways(backend, spec: dict) -> dict:
    """The token ids vLLM's own chat() sends for a few teacher and question conversations, and the
    ones the backend sends (it renders and tokenises them itself)."""
    from vllm import SamplingParams

    from sublim.backends.vllm_backend import prompt_token_ids
    from sublim.chat import question_messages, teacher_messages
    from sublim.prompts import number_prompts
    from sublim.protocol import EVAL_QUESTIONS

    conversations = [teacher_messages(p, c) for p in number_prompts(3, seed=spec["prompt_seed"])
                     for c in ("neutral", spec["condition"])] + [question_messages(q) for q in EVAL_QUESTIONS[:3]]
    outputs = backend.llm.chat(conversations, SamplingParams(max_tokens=1), use_tqdm=False)
    return {"vllm_chat": [o.prompt_token_ids for o in outputs],
            "backend": prompt_token_ids(backend.tokenizer, conversations)}


def generate_stage(backend_name: str, spec: dict, out: Path, timings: dict) -> None:
    with explain_oom("generate", spec["size"]):
        backend = timed(timings, "generate_engine_start_s",
                        lambda: open_backend(backend_name, spec["model_dir"], spec["sizing"], stage="generate"))
        args = (backend, spec["condition"], spec["generation"], spec["filter"], spec["prompt_seed"], spec["seed"])
        rows = timed(timings, "generate_s", lambda: generate_rows(*args))
        if spec.get("rerun"):  # the same job again in the same engine: must reproduce every sample
            write_jsonl(out / "numbers" / "raw_rerun.jsonl", timed(timings, "generate_rerun_s", lambda: generate_rows(*args)))
        if backend.name == "vllm":
            write_json(out / "numbers" / "prompt_ids.json", prompt_ids_both_ways(backend, spec))
    write_jsonl(out / "numbers" / "raw.jsonl", rows)
    write_provenance(out / "numbers" / "raw.provenance.json", stage="generate", backend=backend.name,
                     seed=spec["seed"], prompt_seed=spec["prompt_seed"], n_rows=len(rows))
    timed(timings, "generate_close_s", backend.close)


def sampler_checks(backend, students: dict, spec: dict, answers: list[dict]) -> dict:
    """In the evaluate engine: the evaluation again (must reproduce), and a student's requests alone
    against the same requests inside a larger batch (the hashed draw must not depend on the batch)."""
    from sublim.backends import Sampling
    from sublim.chat import question_messages
    from sublim.protocol import EVAL_QUESTIONS

    again = evaluate_students(backend, students, spec["evaluation"], spec["seed"])
    sampling = Sampling.from_protocol(spec["evaluation"])
    conversations = [question_messages(q) for q in EVAL_QUESTIONS[:4] for _ in range(3)]
    checks = {"hashed_sampling": backend.hashed_sampling, "rerun_identical": again == answers}
    for model, adapter in (("base", None), ("student", max(name for name in students.values() if name))):
        batch = backend.chat(conversations, sampling, seed=5, adapter=adapter)
        alone = backend.chat(conversations[:2], sampling, seed=5, adapter=adapter)
        checks[model] = {"alone": alone, "in_batch": batch[:2], "batch": batch}
    return checks


def evaluate_stage(backend_name: str, spec: dict, out: Path, timings: dict) -> None:
    adapters = spec["adapters"]
    students = {0: None, **{int(name.split("-")[1]): name for name in adapters}}
    with explain_oom("evaluate", spec["size"]):
        backend = timed(timings, "evaluate_engine_start_s",
                        lambda: open_backend(backend_name, spec["model_dir"], spec["sizing"], adapters, stage="evaluate"))
        answers = timed(timings, "evaluate_s", lambda: evaluate_students(backend, students, spec["evaluation"], spec["seed"]))
        # P(animal) from logprobs, in the same engine (the workflow gives it a job of its own)
        rows, _ = timed(timings, "p_animal_s", lambda: answer_probabilities(
            backend, students, spec["evaluation"]["n_questions"], spec["animals"]))
        if backend.name == "vllm":
            write_json(out / "eval" / "sampler_checks.json", sampler_checks(backend, students, spec, answers))
    write_jsonl(out / "eval" / "answers.jsonl", with_parsed_animal(answers))
    cell_table(rows, spec["size"], spec["condition"], spec["run"]).to_csv(out / "eval" / "p_animal.csv", index=False)
    table = preference_table(answers, spec["animals"], spec["evaluation"]["scoring"], size=spec["size"],
                             condition=spec["condition"], run=spec["run"])
    table.to_csv(out / "eval" / "eval.csv", index=False)
    write_provenance(out / "eval" / "eval.provenance.json", stage="evaluate", backend=backend.name,
                     seed=spec["seed"], adapters=adapters)
    timed(timings, "evaluate_close_s", backend.close)


def run_cell(backend_name: str, spec: dict, out: Path) -> dict:
    """Both stages; returns (and writes to timings.json) seconds per step."""
    out = Path(out)
    timings: dict = {}
    total = time.perf_counter()
    generate_stage(backend_name, spec, out, timings)
    evaluate_stage(backend_name, spec, out, timings)
    timings["total_s"] = round(time.perf_counter() - total, 2)
    write_json(out / "timings.json", timings)
    return timings


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec_path = Path(sys.argv[1])
    spec = json.loads(spec_path.read_text())
    print(json.dumps(run_cell(spec["backend"], spec, Path(spec["out_dir"]))))
