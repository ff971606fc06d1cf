rule filter:
    input:
        raw=rules.generate.output.raw,
    output:
        dataset="results/numbers/{size}/{condition}/run-{run}/dataset.jsonl",
        counts="results/numbers/{size}/{condition}/run-{run}/filter.json",
        provenance="results/numbers/{size}/{condition}/run-{run}/dataset.provenance.json",
    log:
        "logs/filter/{size}/{condition}/run-{run}.log",
    benchmark:
        "benchmarks/runs/filter/{size}/{condition}/run-{run}.tsv"
    conda:
        "../../envs/sublim.yaml"
    params:
        filter=lookup(dpath="protocol/filter", within=config),
        seed=run_seed,
    script:
        "../scripts/filter.py"
