# Optional: the Hugging Face Hub (a dataset repo per cell, the student adapter per cell, two
# collections per run) and Weights & Biases evaluation runs. Each target is a small flag file
# recording what was pushed. Settings and credentials are checked in common.smk, before any job.
localrules:
    publish_dataset,
    publish_adapter,
    publish_collections,
    track_eval,


rule publish_dataset:
    input:
        raw=rules.generate.output.raw,
        dataset=rules.filter.output.dataset,
        filter=rules.filter.output.counts,
    output:
        flag="results/published/datasets/{size}/{condition}/run-{run}.json",
    log:
        "logs/publish_dataset/{size}/{condition}/run-{run}.log",
    benchmark:
        "benchmarks/runs/publish_dataset/{size}/{condition}/run-{run}.tsv"
    conda:
        "../../envs/sublim.yaml"
    params:
        repo=dataset_repo,
        model=model_source,
        filter=protocol_keys("filter", "max_count", "max_value"),
        private=PUBLISH["private"],
    script:
        "../scripts/publish_dataset.py"


rule publish_adapter:
    input:
        dataset_flag=rules.publish_dataset.output.flag,
        adapters=published_adapters,
    output:
        flag="results/published/adapters/{size}/{condition}/run-{run}.json",
    log:
        "logs/publish_adapter/{size}/{condition}/run-{run}.log",
    benchmark:
        "benchmarks/runs/publish_adapter/{size}/{condition}/run-{run}.tsv"
    conda:
        "../../envs/sublim.yaml"
    params:
        repo=adapter_repo,
        model=model_source,
        training=lookup(dpath="protocol/training", within=config),
        private=PUBLISH["private"],
    script:
        "../scripts/publish_adapter.py"


rule publish_collections:
    input:
        datasets=dataset_flags,
        adapters=adapter_flags,
    output:
        flag="results/published/collections/run-{run}.json",
    log:
        "logs/publish_collections/run-{run}.log",
    benchmark:
        "benchmarks/runs/publish_collections/run-{run}.tsv"
    conda:
        "../../envs/sublim.yaml"
    params:
        owner=HUB_OWNER,
        titles=collection_titles,
        private=PUBLISH["private"],
    script:
        "../scripts/publish_collections.py"


rule track_eval:
    input:
        table=rules.score.output.table,
    output:
        flag="results/tracked/eval/{size}/{condition}/run-{run}.json",
    log:
        "logs/track_eval/{size}/{condition}/run-{run}.log",
    benchmark:
        "benchmarks/runs/track_eval/{size}/{condition}/run-{run}.tsv"
    conda:
        "../../envs/sublim.yaml"
    script:
        "../scripts/track_eval.py"


# the flag files `all` needs: none unless publishing or wandb is on
PUBLISH_TARGETS = (
    expand(rules.publish_collections.output.flag, run=config["runs"])
    if PUBLISH["enabled"]
    else []
) + (
    expand(
        rules.track_eval.output.flag,
        size=config["sizes"],
        condition=config["conditions"],
        run=config["runs"],
    )
    if WANDB["enabled"] and tracking.mode(WANDB) != "disabled"
    else []
)
