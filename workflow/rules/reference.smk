# The seed pipeline's published run 0 (shipped in src/sublim/data/reference/seed-run-0/), re-scored with
# the grid's scoring and checked against the seed's stored counts; the report overlays it.
localrules:
    reference_seed,


rule reference_seed:
    output:
        table=report(
            "results/tables/reference_seed.csv",
            category="Tables",
            caption="../report/reference_seed.rst",
        ),
    log:
        "logs/reference/reference_seed.log",
    benchmark:
        "benchmarks/runs/reference/reference_seed.tsv"
    conda:
        "../../envs/sublim.yaml"
    params:
        animals=animals(config["conditions"]),
        scoring=lookup(dpath="protocol/evaluation/scoring", within=config),
    script:
        "../scripts/reference_seed.py"
