"""Where a vLLM engine's start goes, from vLLM's own log lines: the phases it times itself (model load,
Dynamo, the compile or the compile cache's load, the profiling run, CUDA-graph capture, the whole
"init engine") and, from the lines' clock (one-second resolution), the front end's time before the
engine core begins and the core's time before its model load.

The log is engine_start_method.py's (h200_session.sh's job_overhead_N.log): one run's vLLM lines, then
the record line the driver prints for that run, and so on. Each phase is joined to its run's record.

    python benchmarks/start_phases.py OUTDIR/job_overhead_*.log --json results/engine_start_phases.json
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import datetime
from pathlib import Path

# vLLM 0.26's own timings of an engine start (the file and line each comes from in the comment)
PHASES = {
    "model_load_s": r"Model loading took [\d.]+ GiB and ([\d.]+) seconds",  # v1/worker/gpu/model_runner.py
    "dynamo_s": r"Dynamo bytecode transform time: ([\d.]+) s",  # compilation/backends.py
    "compile_cache_load_s": r"from the cache, took ([\d.]+) s",  # compilation/backends.py
    "compile_s": r"torch\.compile took ([\d.]+) s in total",  # compilation/monitor.py
    "profiling_run_s": r"Initial profiling/warmup run took ([\d.]+) s",  # compilation/monitor.py
    "graph_capture_s": r"Graph capturing finished in ([\d.]+) secs",  # v1/worker/gpu/model_runner.py
    "init_engine_s": r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s",  # v1/engine/core.py
}
CLOCK = re.compile(r"INFO (\d\d-\d\d \d\d:\d\d:\d\d)")
FRONT_END_BEGINS = "non-default args"
CORE_BEGINS = "Initializing a V1 LLM engine"
LOAD_BEGINS = "Starting to load model"


def _clock(line: str) -> datetime | None:
    found = CLOCK.search(line)
    return datetime.strptime(found.group(1), "%m-%d %H:%M:%S") if found else None


def run_phases(lines: list[str]) -> dict:
    """The phases of one run's log lines; a phase vLLM did not log is absent."""
    phases: dict[str, float] = {}
    for line in lines:
        for name, pattern in PHASES.items():
            found = re.search(pattern, line)
            if found and name not in phases:
                phases[name] = float(found.group(1))
    marks = {}
    for mark in (FRONT_END_BEGINS, CORE_BEGINS, LOAD_BEGINS):
        stamped = [_clock(line) for line in lines if mark in line and _clock(line)]
        if stamped:
            marks[mark] = stamped[0]
    if FRONT_END_BEGINS in marks and CORE_BEGINS in marks:
        phases["front_end_before_core_s"] = (marks[CORE_BEGINS] - marks[FRONT_END_BEGINS]).total_seconds()
    if CORE_BEGINS in marks and LOAD_BEGINS in marks:
        phases["core_before_load_s"] = (marks[LOAD_BEGINS] - marks[CORE_BEGINS]).total_seconds()
    return phases


def log_runs(text: str) -> list[tuple[dict | None, dict]]:
    """(the run's record, or None where its line was cut; its phases) for each run of a driver's log."""
    runs, lines = [], []
    for line in text.splitlines():
        if line.startswith('{"method"'):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            runs.append((record, run_phases(lines)))
            lines = []
        else:
            lines.append(line)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, help="write the phases here (with each run's record where whole)")
    args = parser.parse_args()
    out = []
    for log in args.logs:
        for n, (record, phases) in enumerate(log_runs(log.read_text(errors="replace")), 1):
            out.append({"log": log.name, "run": n, **(record or {}), "vllm_phases": phases})
            print(log.name, n, json.dumps(phases))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
