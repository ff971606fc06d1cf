"""One record per job of a finished workflow run, from Snakemake's own benchmark files
(benchmarks/runs/<rule>/<cell>.tsv: the job's wall time) and the job's *.provenance.json (backend,
device, package versions): what benchmarks/results/h200_workflow_vllm.json holds.

    python benchmarks/workflow_records.py --json benchmarks/results/h200_workflow_vllm.json [--kills kills.json]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

# where each rule's job writes its provenance, relative to the cell's path under these folders
PROVENANCE_HOMES = {"prepare_model": None, "generate": "results/numbers", "filter": "results/numbers",
                    "train": "results/students", "evaluate": "results/eval", "evaluate_base": "results/eval",
                    "score": "results/eval", "report": None}


def cell_fields(rule: str, cell: Path) -> dict:
    parts = cell.parts
    if rule in ("evaluate_base",) or parts[-1] == "base":
        return {"size": parts[0], "condition": "base", "run": 0}
    if len(parts) == 3:
        return {"size": parts[0], "condition": parts[1], "run": int(parts[2].removeprefix("run-"))}
    return {"size": parts[0] if parts else None, "condition": None, "run": None}


def provenance(rule: str, cell: Path) -> dict:
    home = PROVENANCE_HOMES.get(rule)
    if home is None:
        return {}
    stage = {"evaluate_base": "evaluate", "score": None}.get(rule, rule)
    for path in sorted(Path(home, cell).glob("*.provenance.json")):
        record = json.loads(path.read_text())
        if stage is None or record.get("stage") == stage:
            return record
    return {}


def records(runs: Path, killed: set[tuple[str, str]]) -> list[dict]:
    out = []
    for tsv in sorted(runs.rglob("*.tsv")):
        rule = tsv.relative_to(runs).parts[0]
        cell = tsv.relative_to(runs / rule).with_suffix("")
        with tsv.open() as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        if not rows:
            continue
        prov = provenance(rule, cell)
        packages = prov.get("packages", {})
        out.append({"rule": rule, **cell_fields(rule, cell), "wall_s": round(float(rows[-1]["s"]), 2),
                    "max_rss_mb": float(rows[-1]["max_rss"]) if rows[-1].get("max_rss") not in (None, "", "-") else None,
                    "backend": prov.get("backend"), "gpu": prov.get("device"), "date": prov.get("created"),
                    "vllm": packages.get("vllm"), "torch": packages.get("torch"),
                    "killed_once_then_rerun": (rule, str(cell)) in killed})
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True, type=Path)
    parser.add_argument("--runs", type=Path, default=Path("benchmarks/runs"))
    parser.add_argument("--kills", type=Path)
    args = parser.parse_args()
    kills = json.loads(args.kills.read_text()) if args.kills and args.kills.exists() else []
    killed = {(k["rule"], str(Path(k["log"]).relative_to(Path("logs", k["rule"])).with_suffix(""))) for k in kills}
    result = records(args.runs, killed)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
