"""Weights & Biases tracking, optional: a run per training job (loss, learning rate, throughput
per step, through transformers' own WandbCallback) and a run per evaluation (the per-epoch
preference table and the target animal's rate).

`WANDB_MODE=offline` (or `wandb.mode: offline`) writes the runs under `wandb.dir` with no network;
`wandb sync` uploads them later. The run config holds hyperparameters only: never credentials.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os

from sublim.config import section_settings
from sublim.secrets import WANDB_API_KEY, lookup

log = logging.getLogger(__name__)

MODES = ("online", "offline", "disabled")


def settings(config: dict) -> dict:
    """The `wandb:` section over its defaults (data/config.schema.yaml)."""
    return section_settings(config, "wandb")


def mode(section: dict, environ=None) -> str:
    environ = os.environ if environ is None else environ
    chosen = environ.get("WANDB_MODE") or section["mode"]
    if chosen == "dryrun":  # wandb's old name for offline
        chosen = "offline"
    if chosen not in MODES:
        raise ValueError(f"WANDB_MODE / config key 'wandb.mode' is {chosen!r}; use one of {', '.join(MODES)}")
    return chosen


def needs_api_key(section: dict, environ=None) -> bool:
    return bool(section["enabled"]) and mode(section, environ) == "online"


def needed_credentials(section: dict, environ=None) -> list[tuple[str, str]]:
    """(variable, why) for each credential these settings need."""
    if not needs_api_key(section, environ):
        return []
    return [(WANDB_API_KEY, "wandb.enabled is true and mode is online (WANDB_MODE=offline needs none)")]


def _start(section: dict, *, name: str, job_type: str, run: int, tags: list[str], config: dict):
    import wandb

    chosen = mode(section)
    key = lookup(WANDB_API_KEY) if chosen == "online" else None
    if key:  # only this job's process (and wandb's service child) sees it; nothing is written
        os.environ[WANDB_API_KEY] = key
    # absolute: wandb's service process may run elsewhere (a parent's, via WANDB_SERVICE)
    run_dir = os.path.abspath(section["dir"])
    os.makedirs(run_dir, exist_ok=True)
    return wandb.init(project=section["project"], entity=section["entity"], name=name,
                      group=f"run-{run}", job_type=job_type, tags=tags, config=config,
                      dir=run_dir, mode=chosen, reinit="finish_previous",
                      settings=wandb.Settings(silent=True, console="off"))


def _record(wb_run, section: dict) -> dict:
    return {"project": section["project"], "entity": section["entity"], "name": wb_run.name,
            "id": wb_run.id, "mode": mode(section), "url": wb_run.url, "dir": wb_run.dir}


@contextlib.contextmanager
def training_run(config: dict, *, size: str, condition: str, run: int, hyperparameters: dict):
    """Yields the keyword arguments for train_student(): tracker off → no change to training."""
    section = settings(config)
    if not section["enabled"] or mode(section) == "disabled":
        yield {}
        return
    name = section["names"]["train"].format(size=size, condition=condition, run=run)
    wb_run = _start(section, name=name, job_type="train", run=run, tags=[size, condition, f"run-{run}"],
                    config={"size": size, "condition": condition, "run": run, **hyperparameters})
    from sublim.throughput import Throughput  # imports transformers: only in the training job

    try:
        yield {"report_to": "wandb", "run_name": name, "callbacks": (Throughput(),)}
        log.info("wandb run %s (%s)", wb_run.name, mode(section))
    finally:
        wb_run.finish()


def log_evaluation(config: dict, table, *, size: str, condition: str, run: int) -> dict:
    """One run per evaluated cell: the preference table and, per epoch, the target's rate."""
    import wandb

    section = settings(config)
    name = section["names"]["eval"].format(size=size, condition=condition, run=run)
    wb_run = _start(section, name=name, job_type="eval", run=run, tags=[size, condition, f"run-{run}"],
                    config={"size": size, "condition": condition, "run": run})
    try:
        wb_run.define_metric("eval/epoch")
        wb_run.define_metric("eval/*", step_metric="eval/epoch")
        wb_run.log({"eval/preferences": wandb.Table(dataframe=table.reset_index(drop=True))})
        rates = target_rates(table)
        for epoch, rate in rates.items():
            wb_run.log({"eval/epoch": epoch, "eval/target_rate": rate})
        if rates:
            wb_run.summary["eval/final_target_rate"] = rates[max(rates)]
        return _record(wb_run, section)
    finally:
        wb_run.finish()


def target_rates(table) -> dict[int, float]:
    """epoch -> rate of the condition's own animal (empty for the neutral control)."""
    target = table[table["is_target"].astype(bool)]
    return {int(e): float(r) for e, r in zip(target["epoch"], target["rate"]) if not math.isnan(r)}
