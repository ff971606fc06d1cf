"""SIGKILL the first generate, evaluate (evaluate_base included: it logs under logs/evaluate/) and train job
(or those --rules names) of a running workflow once each, the way the OOM
killer or a preemption would, and record what each left behind: its processes (a vLLM engine must
not outlive its job) and GPU memory 15 s later. Run beside `snakemake --profile profiles/b200 …`
(restart-times: 1 reruns the killed jobs); after the workflow, `--report` checks the reruns.

    python benchmarks/kill_jobs.py --watch --json kills.json &      # while the workflow runs
    python benchmarks/kill_jobs.py --report --json kills.json       # after it finished
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

# when to kill: a line in the job's log, then seconds to wait (the job is then mid-way). An evaluate
# waits for its engine process's first line: "vLLM engine:" comes before the engine exists, and 25 s
# after it the seventh session's evaluate_base had no engine yet (its kill left no child to check).
WHEN = {"generate": ("vLLM engine:", 45), "evaluate": ("(EngineCore", 5), "train": ("epoch 1 adapter saved", 0)}


def job_pid(rule: str, log: Path) -> int | None:
    """The job's own process (its Snakemake script, which holds its log open), not its spawned engine."""
    found = subprocess.run(["pgrep", "-f", rf"\.snakemake/scripts/tmp.*\.{rule}\.py"], capture_output=True, text=True)
    target = str(log.resolve())
    for pid in sorted(int(p) for p in found.stdout.split()):
        try:
            if any(os.readlink(fd) == target for fd in Path(f"/proc/{pid}/fd").iterdir()):
                return pid
        except OSError:
            continue
    return None


def descendants(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    children = [int(p) for p in found.stdout.split()]
    return children + [d for c in children for d in descendants(c)]


def alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "\nState:\tZ" not in status.read_text()


def gpu_processes() -> list[str]:
    if shutil.which("nvidia-smi") is None:
        return []
    out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def last_line(log: Path) -> str:
    """What the job was doing when it was killed (progress bars end their updates with a carriage return)."""
    lines = log.read_text(errors="replace").replace("\r", "\n").splitlines()
    return next((line.strip() for line in reversed(lines) if line.strip()), "")[:300]


def watch(path: Path, timeout_s: float, rules: list[str]) -> None:
    kills, pending, seen = [], {rule: WHEN[rule] for rule in rules}, {}
    deadline = time.time() + timeout_s
    while pending and time.time() < deadline:
        for rule, (marker, wait) in list(pending.items()):
            logs = sorted(Path("logs", rule).rglob("*.log"), key=lambda p: p.stat().st_mtime)
            hit = next((log for log in logs if marker in log.read_text(errors="replace")), None)
            if hit is None:
                continue
            seen.setdefault(rule, time.time())
            pid = job_pid(rule, hit)
            if pid is None or time.time() - seen[rule] < wait:
                continue
            family = descendants(pid)
            doing = last_line(hit)
            os.kill(pid, signal.SIGKILL)
            time.sleep(15)
            kills.append({"rule": rule, "log": str(hit), "pid": pid, "children": family, "log_last_line_at_kill": doing,
                          "children_alive_15s_later": [c for c in family if alive(c)],
                          "gpu_processes_15s_later": gpu_processes(), "unix": time.time()})
            del pending[rule]
            path.write_text(json.dumps(kills, indent=1))
        time.sleep(1)
    path.write_text(json.dumps(kills, indent=1))


def report(path: Path) -> None:
    kills = json.loads(path.read_text()) if path.exists() else []
    for kill in kills:
        text = Path(kill["log"]).read_text(errors="replace")
        cell = Path(kill["log"]).relative_to(Path("logs", kill["rule"])).with_suffix("")
        if kill["rule"] == "train":
            kill["resumed"] = "resuming from" in text
            kill["adapters"] = sorted(str(p) for p in Path("results/students", cell).glob("epoch-*/adapter_model.safetensors"))
        if kill["rule"] == "generate":
            raw = Path("results/numbers", cell, "raw.jsonl")
            provenance = json.loads(raw.with_name("raw.provenance.json").read_text())
            kill["raw_rows"] = sum(1 for _ in raw.open())
            kill["provenance_rows"] = provenance.get("n_rows")
            kill["partial_files_left"] = [str(p) for p in Path("results").rglob("*.partial")]
        if kill["rule"] == "evaluate":
            kill["answers_rows"] = sum(1 for _ in Path("results/eval", cell, "answers.jsonl").open())
    path.write_text(json.dumps(kills, indent=1))
    print(json.dumps(kills, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True, type=Path)
    parser.add_argument("--watch", action="store_true")
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--timeout-s", type=float, default=900)
    parser.add_argument("--rules", default=",".join(WHEN), help=f"which rules' first job to kill, of {', '.join(WHEN)}")
    args = parser.parse_args()
    rules = args.rules.split(",")
    if unknown := set(rules) - set(WHEN):
        parser.error(f"--rules: no kill point for {', '.join(sorted(unknown))}; known: {', '.join(WHEN)}")
    watch(args.json, args.timeout_s, rules) if args.watch else report(args.json)
