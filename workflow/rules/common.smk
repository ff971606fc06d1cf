from snakemake.exceptions import WorkflowError

from sublim import publish, tracking
from sublim import secrets as credentials
from sublim.config import (
    BASE,
    ConfigError,
    animals,
    eval_epochs,
    kept_epochs,
    resolve,
    section_settings,
    seed_for,
    sizing_for,
)
from sublim.devices import local_gpu_slots
from sublim.gpu_share import train_gpu_slots, train_threads, whole_gpu_slots
from sublim.models import model_id
from sublim.mps import stop_if_started as stop_mps_if_started
from sublim.p_animal import candidates as p_animal_candidates

try:
    config.update(resolve(config))
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
KEPT_EPOCHS = kept_epochs(config)


wildcard_constraints:
    size=r"[0-9]+(\.[0-9]+)?[mb]",
    condition=r"[a-z]+",
    run=r"[0-9]+",
    epoch=r"[0-9]+",
    model_id=r"[0-9a-f]{12}",


# ---- params: a changed param reruns its job, so each rule's params hold exactly what its job reads


def protocol_keys(section, *keys):
    return {key: PROTOCOL[section][key] for key in keys}


def model_of(size):
    # where the size's weights come from; params_b (the report's x axis) is left out
    return {k: v for k, v in config["models"][size].items() if k != "params_b"}


def model_source(wildcards):
    return model_of(wildcards.size)


# where a size's model is prepared (models.smk); the jobs that load it are told through params
MODEL_DIR = "resources/models/{size}"


def model_record_of(size):
    # the record of the model the config names for `size`: another model is another file
    return rules.prepare_model.output.record.format(
        size=size, model_id=model_id(model_of(size))
    )


def model_record(wildcards):
    return model_record_of(wildcards.size)


def run_seed(wildcards):
    return seed_for(PROTOCOL["seed"], wildcards.run)


def prompt_seed(wildcards):
    return seed_for(PROTOCOL["generation"]["prompt_seed"], wildcards.run)


# ---- resources: hardware sizing, read from the config (never params: it reruns nothing)


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


# ---- the grid: files named by the rules that make them (rules.<rule>.output)


def epoch_files(pattern):
    # one file per epoch, epoch 1 first; an epoch that keep_adapters does not keep is a temp file,
    # deleted once the jobs that read it (evaluate, publish_adapter) have run
    paths = expand(pattern, epoch=EPOCHS)
    return [p if e in KEPT_EPOCHS else temp(p) for e, p in zip(EPOCHS, paths)]


def trained_files(wildcards, outputs, epochs):
    # the train job's outputs list one file per epoch, epoch 1 first
    return [
        rules.train.output[name][epoch - 1].format(**wildcards)
        for epoch in epochs
        for name in outputs
    ]


def evaluated_adapters(wildcards):
    return trained_files(wildcards, ["adapters"], eval_epochs(PROTOCOL))


def evaluated_adapter_configs(wildcards):
    # inputs too, so that an epoch keep_adapters drops keeps its whole folder until evaluated
    return trained_files(wildcards, ["configs"], eval_epochs(PROTOCOL))


def evaluated_cells():
    # every student cell, then each size's untuned base model (condition "base", run 0)
    cells = [
        dict(size=size, condition=condition, run=run)
        for size in config["sizes"]
        for condition in config["conditions"]
        for run in config["runs"]
    ]
    return cells + [dict(size=size, condition=BASE, run=0) for size in config["sizes"]]


def cell_files(student_output, base_output):
    # one file per evaluated cell, in evaluated_cells() order
    return [
        (base_output if cell["condition"] == BASE else student_output).format(**cell)
        for cell in evaluated_cells()
    ]


# ---- publishing and tracking (publish.smk): settings and credentials checked before any job;
# credentials are read by the jobs themselves, never params (params are stored in .snakemake/)

PUBLISH = publish.settings(config)
WANDB = tracking.settings(config)
try:
    _problems = publish.preflight(PUBLISH)
    tracking.mode(WANDB)
except ValueError as error:
    _problems = [str(error)]
if _problems:
    raise WorkflowError("invalid configuration:\n  " + "\n  ".join(_problems))
_missing = credentials.missing(
    publish.needed_credentials(PUBLISH) + tracking.needed_credentials(WANDB)
)
if _missing:
    raise WorkflowError(credentials.missing_message(_missing))
HUB_OWNER = (
    (PUBLISH["owner"] or credentials.lookup(credentials.HF_USER_ID))
    if PUBLISH["enabled"]
    else None
)


def hub_repo(wildcards, kind):
    return publish.repo_id(
        HUB_OWNER,
        PUBLISH["names"][kind],
        size=wildcards.size,
        condition=wildcards.condition,
        run=wildcards.run,
    )


def dataset_repo(wildcards):
    return hub_repo(wildcards, "dataset")


def adapter_repo(wildcards):
    return hub_repo(wildcards, "adapter")


def published_adapters(wildcards):
    epochs = EPOCHS if PUBLISH["adapters"] == "all" else EPOCHS[-1:]
    return trained_files(wildcards, ["adapters", "configs"], epochs)


def run_flags(wildcards, publish_rule):
    # the flag files of every cell of one run
    return expand(
        publish_rule.output.flag,
        size=config["sizes"],
        condition=config["conditions"],
        run=wildcards.run,
    )


def dataset_flags(wildcards):
    return run_flags(wildcards, rules.publish_dataset)


def adapter_flags(wildcards):
    return run_flags(wildcards, rules.publish_adapter)


def collection_titles(wildcards):
    return {
        kind: PUBLISH["names"][kind].format(run=wildcards.run)
        for kind in ("dataset_collection", "model_collection")
    }


def kept_students():
    # the adapters keep_adapters keeps, of every student cell: a deleted one is trained again
    return [
        path
        for cell in evaluated_cells()
        if cell["condition"] != BASE
        for path in trained_files(cell, ["adapters", "configs"], KEPT_EPOCHS)
    ]


def all_targets():
    # The grid is complete when every cell's kept adapters, answers and scores, the report, the
    # power table and the seed's reference table exist (README, "Troubleshooting").
    # rules.report, rules.power (report.smk), rules.reference_seed (reference.smk), P_ANIMAL_TARGETS
    # (p_animal.smk, empty unless p_animal is on) and PUBLISH_TARGETS (publish.smk, empty unless
    # publishing or wandb is on) are defined by later includes; `rule all` calls this after them.
    return (
        kept_students()
        + cell_files(rules.score.output.table, rules.score_base.output.table)
        + list(rules.report.output)
        + [rules.reference_seed.output.table, rules.power.output.table]
        + P_ANIMAL_TARGETS
        + PUBLISH_TARGETS
    )
