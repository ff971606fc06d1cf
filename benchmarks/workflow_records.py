"""One record per job of a finished workflow run, from Snakemake's own benchmark files
(benchmarks/runs/<stage>/<cell>.tsv: the wall time of the job's last attempt), the job's *.provenance.json
(backend, package versions) and Snakemake's log (failed attempts before it): what
benchmarks/results/h200_workflow_vllm.json holds.

    python benchmarks/workflow_records.py --json benchmarks/results/h200_workflow_vllm.json \
        [--kills kills.json] [--snakemake-log workflow.log ...] [--session NAME]

With --session, each record is labelled with it and the records of other sessions already in --json are
kept (a lent GPU's 30 minutes may not reach every rule in one session).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import re
from collections import Counter
from pathlib import Path

GPU_RULES = {"generate", "train", "evaluate", "evaluate_base"}
# where a job writes its provenance, relative to the cell's path (score and report write none)
PROVENANCE_HOMES = {"generate": "results/numbers", "filter": "results/numbers", "train": "results/students",
                    "evaluate": "results/eval", "evaluate_base": "results/eval"}


def rule_of(stage: str, cell: Path) -> str:
    """The Snakemake rule behind benchmarks/runs/<stage>/<cell>.tsv (several rules share a stage's folder)."""
    if stage in ("report", "reference"):
        return cell.name  # report/power.tsv, report/report.tsv, reference/reference_seed.tsv
    if cell.name == "base":
        return {"evaluate": "evaluate_base", "score": "score_base"}.get(stage, stage)
    return stage


def cell_fields(rule: str, cell: Path) -> dict:
    parts = cell.parts
    if cell.name == "base":
        return {"size": parts[0], "condition": "base", "run": 0}
    if len(parts) == 3:
        return {"size": parts[0], "condition": parts[1], "run": int(parts[2].removeprefix("run-"))}
    if rule == "prepare_model":
        return {"size": parts[0], "condition": None, "run": None}
    return {"size": None, "condition": None, "run": None}


def provenance(rule: str, cell: Path) -> dict:
    if rule not in PROVENANCE_HOMES:
        return {}
    stage = rule.removesuffix("_base")
    for path in sorted(Path(PROVENANCE_HOMES[rule], cell).glob("*.provenance.json")):
        record = json.loads(path.read_text())
        if record.get("stage") == stage:
            return record
    return {}


def failed_attempts(snakemake_logs: list[Path]) -> Counter:
    """Failed attempts per job, keyed by its log relative to logs/ without suffix (= its benchmark's key)."""
    failures = Counter()
    for path in snakemake_logs:
        text = (gzip.open(path, "rt") if path.suffix == ".gz" else path.open()).read()
        for block in re.split(r"\n(?=Error in rule )", text)[1:]:
            log = re.search(r"\n\s+log: logs/(\S+)\.log", block)
            if log:
                failures[log.group(1)] += 1
    return failures


def records(runs: Path, killed: set[str], failures: Counter) -> list[dict]:
    out = []
    for tsv in sorted(runs.rglob("*.tsv")):
        relative = tsv.relative_to(runs).with_suffix("")
        key, stage, cell = str(relative), relative.parts[0], relative.relative_to(relative.parts[0])
        with tsv.open() as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        if not rows:
            continue
        rule = rule_of(stage, cell)
        prov = provenance(rule, cell)
        packages = prov.get("packages", {})
        on_gpu = rule in GPU_RULES
        out.append({"rule": rule, **cell_fields(rule, cell), "wall_s": round(float(rows[-1]["s"]), 2),
                    "max_rss_mb": None if rows[-1].get("max_rss") in (None, "", "-") else float(rows[-1]["max_rss"]),
                    "backend": prov.get("backend") if on_gpu else None, "gpu": prov.get("device") if on_gpu else None,
                    "date": prov.get("created"), "vllm": packages.get("vllm"), "torch": packages.get("torch"),
                    "failed_attempts_before": failures.get(key, 0), "sigkilled_by_kill_jobs": key in killed})
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True, type=Path)
    parser.add_argument("--runs", type=Path, default=Path("benchmarks/runs"))
    parser.add_argument("--kills", type=Path)
    parser.add_argument("--snakemake-log", type=Path, nargs="*", default=[],
                        help="Snakemake's output (.snakemake/log/*.log or the console's, .gz allowed)")
    parser.add_argument("--session", help="label the records; keep the other sessions' records in --json")
    args = parser.parse_args()
    kills = json.loads(args.kills.read_text()) if args.kills and args.kills.exists() else []
    killed = {str(Path(k["log"]).relative_to("logs").with_suffix("")) for k in kills}
    result = records(args.runs, killed, failed_attempts(args.snakemake_log))
    if args.session:
        kept = json.loads(args.json.read_text()) if args.json.exists() else []
        kept = [r for r in kept if r.get("session") != args.session]
        result = kept + [{**r, "session": args.session} for r in result]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
