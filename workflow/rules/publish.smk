# Optional: the Hugging Face Hub (a dataset repo per cell, the student adapter per cell, two
# collections per run) and Weights & Biases evaluation runs. Each target is a small flag file
# recording what was pushed. Credentials are checked here, before any job, and are read by the
# jobs themselves: they are never params (params are stored in .snakemake/ metadata).
from sublim import publish, tracking
from sublim import secrets as credentials

PUBLISH = publish.settings(config)
WANDB = tracking.settings(config)
try:
    _problems = publish.preflight(PUBLISH)
    tracking.mode(WANDB)
except ValueError as error:
    _problems = [str(error)]
if _problems:
    raise WorkflowError("invalid configuration:\n  " + "\n  ".join(_problems))
if _missing := credentials.missing_credentials(config):
    raise WorkflowError(credentials.missing_message(_missing))
HUB_OWNER = (
    (PUBLISH["owner"] or credentials.lookup(credentials.HF_USER_ID))
    if PUBLISH["enabled"]
    else None
)
PUBLISH_TARGETS = publish.workflow_targets(config)
PUBLISHED_EPOCHS = publish.published_epochs(PUBLISH, EPOCHS)
PUBLISHED = publish.PUBLISHED


localrules:
    publish_dataset,
    publish_adapter,
    publish_collections,
    track_eval,


rule publish_dataset:
    input:
        dataset=f"results/numbers/{CELL}/dataset.jsonl",
        filter=f"results/numbers/{CELL}/filter.json",
    output:
        flag=f"{PUBLISHED}/datasets/{CELL}.json",
    log:
        f"logs/publish_dataset/{CELL}.log",
    benchmark:
        f"benchmarks/runs/publish_dataset/{CELL}.tsv"
    conda:
        "../../envs/sublim.yaml"
    params:
        repo=publish.repo_param(HUB_OWNER, PUBLISH["names"]["dataset"]),
        model=model_for,
        private=PUBLISH["private"],
    script:
        "../scripts/publish_dataset.py"


rule publish_adapter:
    input:
        dataset_flag=f"{PUBLISHED}/datasets/{CELL}.json",
        adapters=publish.adapter_inputs(PUBLISHED_EPOCHS),
    output:
        flag=f"{PUBLISHED}/adapters/{CELL}.json",
    log:
        f"logs/publish_adapter/{CELL}.log",
    benchmark:
        f"benchmarks/runs/publish_adapter/{CELL}.tsv"
    conda:
        "../../envs/sublim.yaml"
    params:
        repo=publish.repo_param(HUB_OWNER, PUBLISH["names"]["adapter"]),
        model=model_for,
        training=lookup(dpath="protocol/training", within=config),
        private=PUBLISH["private"],
    script:
        "../scripts/publish_adapter.py"


rule publish_collections:
    input:
        datasets=publish.run_flag_inputs(config, "datasets"),
        adapters=publish.run_flag_inputs(config, "adapters"),
    output:
        flag=f"{PUBLISHED}/collections/run-{{run}}.json",
    log:
        "logs/publish_collections/run-{run}.log",
    benchmark:
        "benchmarks/runs/publish_collections/run-{run}.tsv"
    conda:
        "../../envs/sublim.yaml"
    params:
        owner=HUB_OWNER,
        titles=publish.collection_titles_param(PUBLISH),
        private=PUBLISH["private"],
    script:
        "../scripts/publish_collections.py"


rule track_eval:
    input:
        table=f"results/eval/{CELL}/eval.csv",
    output:
        flag=f"{publish.TRACKED}/{CELL}.json",
    log:
        f"logs/track_eval/{CELL}.log",
    benchmark:
        f"benchmarks/runs/track_eval/{CELL}.tsv"
    conda:
        "../../envs/sublim.yaml"
    script:
        "../scripts/track_eval.py"
