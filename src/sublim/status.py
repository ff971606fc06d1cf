"""`make status`: where a grid stands while it runs (or after it stopped), read from Snakemake's own
records without starting Snakemake, so it works beside a running one:

- benchmarks/runs/<rule>/<size>/<condition>/run-<run>.tsv (…/<size>/base.tsv, …/<size>.tsv): written
  by Snakemake when a job succeeds, with its wall time `s`;
- .snakemake/log/*.snakemake.log: each Snakemake run's log — a block per job it started (rule,
  wildcards, log file), "Finished jobid" when it succeeded, "Error in rule" when it failed;
- .snakemake/locks/ (files there while a Snakemake runs in the directory) and .snakemake/incomplete/
  (a marker per output of a job that started and did not finish: running, or cut off by a kill);
- logs/…: a failed job's own log, whose last error line is shown.

GPU-hours spent are each finished job's wall time x the cards it held (sublim.cost.card_share);
projected ones, and the ETA, come from sublim.cost, scaled by how the finished jobs of each stage
compared with their projection.

    python -m sublim.status --profile profiles/b200 [--configfile …] [--directory DIR]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sublim import cost
from sublim.config import BASE, ConfigError, sizing_for
from sublim.profiles import load_config, profile_cards, profile_settings

CELL_RULES = ("generate", "filter", "train", "evaluate", "score")
SIZE_RULES = ("prepare_model", "evaluate_base", "score_base")
COLUMNS = (("model", "prepare_model"), ("generate", "generate"), ("filter", "filter"), ("train", "train"),
           ("evaluate", "evaluate"), ("score", "score"), ("base eval", "evaluate_base"),
           ("base score", "score_base"))
GPU_RULES = ("generate", "train", "evaluate", "evaluate_base")
ERROR_LINE = re.compile(r"(Error|Exception|error:|Killed|out of memory|Traceback)", re.I)


@dataclass(frozen=True)
class Job:
    rule: str
    size: str
    condition: str | None = None
    run: int | None = None

    def __str__(self) -> str:
        cell = [self.size] + ([self.condition] if self.condition else []) + ([f"run {self.run}"] if self.run else [])
        return f"{self.rule} {' '.join(cell)}"


def job_from_wildcards(rule: str, wildcards: dict) -> Job | None:
    if "size" not in wildcards:
        return None
    run = wildcards.get("run")
    return Job(rule, wildcards["size"], wildcards.get("condition"), int(run) if run else None)


def job_from_benchmark(path: Path, runs_dir: Path) -> Job | None:
    """The job a benchmark file records, from the rules' `benchmark:` layout."""
    parts = path.relative_to(runs_dir).with_suffix("").parts
    rule, rest = parts[0], parts[1:]
    if len(rest) == 3 and rest[2].startswith("run-"):
        return Job(rule, rest[0], rest[1], int(rest[2][4:]))
    if len(rest) == 2 and rest[1] == BASE:
        return Job(f"{rule}_{BASE}", rest[0])
    if rule in SIZE_RULES and len(rest) in (1, 2):  # prepare_model: <size>/<model_id>
        return Job(rule, rest[0])
    return None


def benchmark_wall_s(path: Path) -> float | None:
    try:
        with path.open() as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        return float(row["s"])
    except (OSError, StopIteration, KeyError, ValueError):
        return None


# -- Snakemake's run logs -------------------------------------------------------------------------

@dataclass
class Started:
    job: Job
    log: str | None
    since: float
    state: str = "running"  # running | finished | failed
    failed_at: float | None = None


STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
RULE = re.compile(r"^(?:local)?rule (\w+):$")
FIELD = re.compile(r"^\s+(\w+): (.*)$")
FINISHED = re.compile(r"^Finished jobid: (\d+)")
ERROR = re.compile(r"^Error in rule (\w+):$")


def _wildcards(text: str) -> dict:
    return dict(item.split("=", 1) for item in re.split(r",\s*", text.strip()) if "=" in item)


def read_run_log(path: Path) -> list[Started]:
    """Every job one Snakemake run started, and what became of it (a restarted job counts once, as
    its last attempt ended)."""
    jobs: dict[str, Started] = {}
    stamp, block, kind = 0.0, {}, None

    def close():
        if kind == "rule" and "jobid" in block:
            job = job_from_wildcards(block["rule"], _wildcards(block.get("wildcards", "")))
            if job:
                jobs[block["jobid"]] = Started(job, block.get("log", "").split(" (")[0] or None, stamp)
        elif kind == "error" and block.get("jobid") in jobs:
            jobs[block["jobid"]].state, jobs[block["jobid"]].failed_at = "failed", stamp

    for line in path.read_text(errors="replace").splitlines():
        if match := STAMP.match(line):
            close()
            kind, block = None, {}
            stamp = time.mktime(time.strptime(match[1], "%a %b %d %H:%M:%S %Y"))
        elif match := RULE.match(line):
            close()
            kind, block = "rule", {"rule": match[1]}
        elif match := ERROR.match(line):
            close()
            kind, block = "error", {"rule": match[1]}
        elif (match := FIELD.match(line)) and kind:
            block.setdefault(match[1], match[2])
        elif match := FINISHED.match(line):
            close()
            kind, block = None, {}
            if match[1] in jobs:
                jobs[match[1]].state = "finished"
        elif not line.startswith(" "):
            close()
            kind, block = None, {}
    close()
    return list(jobs.values())


def last_error_line(log: Path) -> str:
    """The last line of a job's log that names an error, else its last line."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    errors = [line for line in lines if ERROR_LINE.search(line)]
    line = (errors or lines or ["(empty log)"])[-1]
    return line if len(line) <= 200 else line[:197] + "..."


# -- the state of the directory -------------------------------------------------------------------

@dataclass
class State:
    done: dict[Job, float] = field(default_factory=dict)  # job -> wall seconds
    running: list[Started] = field(default_factory=list)
    interrupted: list[Started] = field(default_factory=list)  # running when the last Snakemake stopped
    failed: list[Started] = field(default_factory=list)
    snakemake_running: bool = False
    incomplete_markers: int = 0
    runs_logged: int = 0  # Snakemake runs that started jobs


def read_state(workdir: Path) -> State:
    state = State()
    runs_dir = workdir / "benchmarks" / "runs"
    for path in sorted(runs_dir.rglob("*.tsv")) if runs_dir.exists() else []:
        job = job_from_benchmark(path, runs_dir)
        wall = benchmark_wall_s(path)
        if job and wall is not None:
            state.done[job] = wall
    meta = workdir / ".snakemake"
    locks = meta / "locks"
    state.snakemake_running = locks.exists() and any(p.is_file() for p in locks.iterdir())
    incomplete = meta / "incomplete"
    state.incomplete_markers = sum(1 for p in incomplete.rglob("*") if p.is_file()
                                   and p.name != "migration_underway") if incomplete.exists() else 0
    logs = sorted((meta / "log").glob("*.snakemake.log")) if (meta / "log").exists() else []
    failures: dict[Job, Started] = {}
    last_run: list[Started] = []  # the last log that started jobs (`--summary`, `--unlock` … start none)
    for log in logs:
        started_jobs = read_run_log(log)
        failures.update({s.job: s for s in started_jobs if s.state == "failed"})
        last_run = started_jobs or last_run
        state.runs_logged += bool(started_jobs)
    for started in last_run:
        if started.state == "running" and started.job not in state.done:
            (state.running if state.snakemake_running else state.interrupted).append(started)
    unfinished = {s.job for s in state.running + state.interrupted}
    state.failed = [s for job, s in failures.items() if job not in state.done and job not in unfinished]
    return state


# -- what is expected, projected, spent -----------------------------------------------------------

def expected_jobs(config: dict) -> list[Job]:
    cells = [(s, c, r) for s in config["sizes"] for c in config["conditions"] for r in config["runs"]]
    return ([Job(rule, s, c, r) for rule in CELL_RULES for s, c, r in cells]
            + [Job(rule, s) for rule in SIZE_RULES for s in config["sizes"]])


def card_seconds(config: dict, job: Job, wall_s: float) -> float:
    return wall_s * cost.card_share(job.rule, sizing_for(config, job.size), job.size)


def projected_card_s(config: dict, m: cost.Measurements | None) -> dict[tuple[str, str], float]:
    """(rule, size) -> projected card-seconds of one job."""
    if m is None:
        return {}
    return {(rule, size): job.total_card_s for size in config["sizes"]
            for rule, job in cost.cell_jobs(config, size, m).items()}


def first_engine_card_s(config: dict, m: cost.Measurements | None) -> dict[tuple[str, str], float]:
    """(rule, size) -> what the size's first job of the rule adds by filling the compile cache."""
    if m is None:
        return {}
    return {(rule, size): extra for size in config["sizes"]
            for rule, extra in cost.first_engine_extra_card_s(config, size, m).items()}


def _h(seconds: float) -> str:
    return f"{seconds / 3600:,.1f}"


def status_text(config: dict, state: State, m: cost.Measurements | None, cards: int | None,
                workdir: Path, where: str, now: float | None = None) -> str:
    now = time.time() if now is None else now
    expected = expected_jobs(config)
    in_grid = set(expected)
    done = {job: wall for job, wall in state.done.items() if job in in_grid}
    running = [s for s in state.running if s.job in in_grid]
    interrupted = [s for s in state.interrupted if s.job in in_grid]
    failed = [s for s in state.failed if s.job in in_grid]
    lines = [f"sublim status — {where}, {dt.datetime.fromtimestamp(now):%Y-%m-%d %H:%M}"]
    if state.snakemake_running:
        lines.append(f"Snakemake is running here; {len(running)} job(s) running")
    else:
        lines.append("no Snakemake is running here" + (
            f"; {state.incomplete_markers} output(s) are marked incomplete (cut off by a kill): the next "
            f"run deletes and reruns their jobs" if state.incomplete_markers else ""))
        if interrupted:
            lines.append("cut off when the last run stopped: " + ", ".join(str(s.job) for s in interrupted))
    if not done and not running and not failed and not state.runs_logged:
        lines.append(f"nothing has run yet: {len(expected)} jobs planned")
    lines += ["", "jobs done per stage and size (done/total, +running, !failed):"]
    lines.append(f"{'size':>6} " + " ".join(f"{title:>11}" for title, _ in COLUMNS))
    for size in config["sizes"]:
        cells = []
        for _, rule in COLUMNS:
            jobs = [j for j in expected if j.rule == rule and j.size == size]
            text = f"{sum(j in done for j in jobs)}/{len(jobs)}"
            text += "".join(f"{mark}{n}" for mark, n in (("+", sum(s.job.rule == rule and s.job.size == size
                                                                   for s in running)),
                                                        ("!", sum(s.job.rule == rule and s.job.size == size
                                                                  for s in failed))) if n)
            cells.append(f"{text:>11}")
        lines.append(f"{size:>6} " + " ".join(cells))
    if running:
        lines += ["", f"running ({len(running)}):"]
        lines += [f"  {s.job} for {(now - s.since) / 60:.0f} min" + (f" — {s.log}" if s.log else "")
                  for s in sorted(running, key=lambda s: s.since)]
    if failed:
        lines += ["", f"failed, not rerun since ({len(failed)}):"]
        for s in sorted(failed, key=lambda s: str(s.job)):
            detail = last_error_line(workdir / s.log) if s.log else ""
            lines.append(f"  {s.job} — {s.log or 'no log'}: {detail}")
    lines += ["", *gpu_lines(config, expected, done, m, cards)]
    return "\n".join(lines) + "\n"


def gpu_lines(config: dict, expected: list[Job], done: dict[Job, float], m: cost.Measurements | None,
              cards: int | None) -> list[str]:
    gpu_jobs = [j for j in expected if j.rule in GPU_RULES]
    on_gpu = any(cost.card_share(j.rule, sizing_for(config, j.size), j.size) for j in gpu_jobs)
    projected = projected_card_s(config, m)
    lines = []
    if not on_gpu:
        walls = {}
        for job, wall in done.items():
            walls.setdefault(job.rule, []).append(wall)
        remaining = [j for j in expected if j not in done]
        left = sum(statistics.mean(walls[j.rule]) for j in remaining if j.rule in walls)
        unseen = sorted({j.rule for j in remaining if j.rule not in walls})
        lines.append("no GPU in this configuration's sizing (gpus 0): no GPU-hours")
        if remaining and not walls:
            lines.append("ETA: after the first jobs have finished (their wall times are the pace)")
        elif remaining:
            lines.append(f"ETA: ~{left / 60:,.0f} min of jobs left, one at a time, at the finished jobs' mean wall "
                         f"time per stage" + (f"; not yet timed: {', '.join(unseen)}" if unseen else ""))
        return lines
    spent = {rule: sum(card_seconds(config, j, w) for j, w in done.items() if j.rule == rule) for rule in GPU_RULES}
    ratio = {}
    for rule in GPU_RULES:
        planned = sum(projected.get((j.rule, j.size), 0) for j in done if j.rule == rule)
        ratio[rule] = spent[rule] / planned if planned and spent[rule] else 1.0
    first = first_engine_card_s(config, m)
    total_projected = sum(projected.get((j.rule, j.size), 0) for j in gpu_jobs) + sum(first.values())
    left = sum(projected.get((j.rule, j.size), 0) * ratio[j.rule] for j in gpu_jobs if j not in done)
    left += sum(extra * ratio[rule] for (rule, size), extra in first.items()
                if not any(j.rule == rule and j.size == size for j in done))
    lines.append("GPU-hours (card-hours), spent by finished jobs against projected (sublim.cost):")
    for rule in GPU_RULES:
        finished = [j for j in done if j.rule == rule]
        planned = sum(projected.get((j.rule, j.size), 0) for j in finished)
        lines.append(f"  {rule:>13}: {_h(spent[rule])} spent by {len(finished)} finished job(s)"
                     + (f" against {_h(planned)} projected (x{ratio[rule]:.2f})" if projected and finished else ""))
    if not projected:
        lines.append("  (no benchmark records: projections and the ETA are off)")
        return lines
    lines.append(f"  whole grid: {_h(sum(spent.values()))} spent of {_h(total_projected)} projected; "
                 f"{_h(left)} left at the finished jobs' pace")
    n = cards or 1
    eta = left / n
    finish = dt.datetime.now() + dt.timedelta(seconds=eta)
    lines.append(f"ETA on {n} card{'s' if n > 1 else ''}: {_h(eta)} h ({eta / 86400:.1f} days), around "
                 f"{finish:%Y-%m-%d %H:%M}" + ("" if cards else " (cards unknown: --cards N)"))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="profiles/b200", help="the profile the grid runs with ('' for none)")
    parser.add_argument("--configfile", nargs="*", default=[], help="as snakemake --configfile")
    parser.add_argument("--directory", default=".", help="the workflow's working directory")
    parser.add_argument("--cards", type=int, help="cards the jobs run on (default: the profile's)")
    parser.add_argument("--records", default="benchmarks/results", help="the benchmark records (projections)")
    args = parser.parse_args(argv)
    root = Path(args.directory)
    try:
        config = load_config(args.profile or None, args.configfile, root)
        cards = args.cards or profile_cards(config, profile_settings(args.profile or None, root))
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"status: {error}", file=sys.stderr)
        return 2
    try:
        m = cost.load_measurements(args.records)
    except (FileNotFoundError, ValueError) as error:
        print(f"status: projections off: {error}", file=sys.stderr)
        m = None
    where = f"{root.resolve()} (profile {args.profile or 'none'})"
    sys.stdout.write(status_text(config, read_state(root), m, cards, root, where))
    return 0


if __name__ == "__main__":
    sys.exit(main())
