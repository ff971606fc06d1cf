from pathlib import Path

from snakemake.exceptions import WorkflowError

from sublim.config import (
    ConfigError,
    animals,
    eval_epochs,
    resolve,
    seed_for,
    sizing_for,
)
from sublim.devices import local_gpu_slots
from sublim.gpu_share import train_gpu_slots, train_threads, whole_gpu_slots
from sublim.mps import stop_if_started as stop_mps_if_started

try:
    config.update(resolve(config, Path(workflow.basedir) / "config" / "schema.yaml"))
    # profiles/multi-gpu: Snakemake's gpu_slots budget is 4 per card of the machine
    GPU_SLOT_BUDGET = local_gpu_slots(
        config, workflow.global_resources.get("gpu_slots")
    )
except ConfigError as error:
    raise WorkflowError(str(error)) from None
if GPU_SLOT_BUDGET is not None:
    workflow.register_resource("gpu_slots", GPU_SLOT_BUDGET)

PROTOCOL = config["protocol"]
EPOCHS = list(range(1, PROTOCOL["training"]["epochs"] + 1))
CELL = "{size}/{condition}/run-{run}"


wildcard_constraints:
    size=r"[0-9]+(\.[0-9]+)?[mb]",
    condition=r"[a-z]+",
    run=r"[0-9]+",
    epoch=r"[0-9]+",


def model_for(wildcards):
    return config["models"][wildcards.size]


def sizing(wildcards):
    return sizing_for(config, wildcards.size)


def gpus(wildcards):
    return sizing(wildcards)["gpus"]


def mem_mb(wildcards, attempt):
    return sizing(wildcards)["mem_mb"] * attempt


def runtime(wildcards, attempt):
    return sizing(wildcards)["runtime"] * attempt


# For a cluster executor: CPUs per job and an optional GPU model (e.g. "h100"); None leaves the
# resource unset, so the scheduler's default applies.
def cpus(wildcards):
    return sizing(wildcards).get("cpus")


def gpu_model(wildcards):
    return sizing(wildcards).get("gpu_model")


# A local profile caps gpu_slots at one card's slots (profiles/b200): generate/evaluate take the
# whole card, a small model's training a share of it (sizing gpu_share), so trainings pack.
def gpu_slots(wildcards):
    return whole_gpu_slots(sizing(wildcards))


def train_slots(wildcards):
    try:
        return train_gpu_slots(sizing(wildcards), wildcards.size)
    except ConfigError as error:
        raise WorkflowError(str(error)) from None


def train_cpu_threads(wildcards):
    return train_threads(sizing(wildcards))


def run_seed(wildcards):
    return seed_for(PROTOCOL["seed"], wildcards.run)


def prompt_seed(wildcards):
    return seed_for(PROTOCOL["generation"]["prompt_seed"], wildcards.run)


def evaluated_adapters(wildcards):
    return expand(
        "results/students/{size}/{condition}/run-{run}/epoch-{epoch}/adapter_model.safetensors",
        epoch=eval_epochs(PROTOCOL),
        **wildcards,
    )


def eval_tables():
    return expand(
        "results/eval/{size}/{condition}/run-{run}/eval.csv",
        size=config["sizes"],
        condition=config["conditions"],
        run=config["runs"],
    ) + expand("results/eval/{size}/base/eval.csv", size=config["sizes"])


def eval_answers():
    return [table.replace("eval.csv", "answers.jsonl") for table in eval_tables()]


def size_plots(kind):
    return expand("results/plots/{kind}_{size}.png", kind=kind, size=config["sizes"])


def all_targets():
    # PUBLISH_TARGETS (publish.smk) is empty unless publishing or wandb is on
    return eval_tables() + REPORT_OUTPUTS + PUBLISH_TARGETS
