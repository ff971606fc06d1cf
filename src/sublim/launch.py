"""Run one function in several local processes of one torch.distributed group, from inside a job:
what `torchrun --standalone --nproc-per-node k` does, through torch's elastic launcher API, so the
Snakemake job stays a plain `script:` and its process keeps the job's GPU claim (sublim.devices).

Each process is `python -m sublim.launch <spec.json>`: a fresh interpreter that imports the
function by name (the job's own script is never re-imported, as multiprocessing's spawn would).
It gets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT (a free port: several jobs may
launch at once), and dies with the job's process, even when that one is SIGKILLed: a process left
behind would hold a card the allocator has already handed on. Their output goes to the job's log
through this process's sys.stdout/sys.stderr; rank 0's return value comes back as JSON.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

from torch.distributed.elastic.multiprocessing.errors import record

from sublim.process import die_with_parent

RESULT = "rank-0-result.json"


def run_processes(processes: int, entry: str, kwargs: dict, workdir: Path):
    """`entry` ("package.module:function") called with `kwargs` (JSON) in `processes` processes;
    returns rank 0's return value. A failing process stops the others and raises torch's
    ChildFailedError, whose message carries its exception."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    workdir.mkdir(parents=True, exist_ok=True)
    spec, result = workdir / "launch.json", workdir / RESULT
    spec.write_text(json.dumps({"entry": entry, "kwargs": kwargs}))
    result.unlink(missing_ok=True)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=processes, run_id=f"sublim-{os.getpid()}",
                          role="rank", rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          monitor_interval=1, logs_specs=DefaultLogsSpecs(redirects=Std.ALL, tee=Std.ALL))
    elastic_launch(config, sys.executable)("-m", "sublim.launch", str(spec))
    return json.loads(result.read_text())


@record  # a failure's exception reaches the launching process in ChildFailedError's message
def main(spec_path: str) -> None:
    die_with_parent()
    spec = json.loads(Path(spec_path).read_text())
    module, name = spec["entry"].split(":")
    value = getattr(importlib.import_module(module), name)(**spec["kwargs"])
    if int(os.environ["RANK"]) == 0:
        Path(spec_path).with_name(RESULT).write_text(json.dumps(value))


if __name__ == "__main__":
    main(sys.argv[1])
