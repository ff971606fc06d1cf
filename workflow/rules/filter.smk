rule filter:
    input:
        raw=f"results/numbers/{CELL}/raw.jsonl",
    output:
        dataset=f"results/numbers/{CELL}/dataset.jsonl",
        counts=f"results/numbers/{CELL}/filter.json",
    log:
        f"logs/filter/{CELL}.log",
    benchmark:
        f"benchmarks/runs/filter/{CELL}.tsv"
    conda:
        "../../envs/sublim.yaml"
    params:
        filter=lookup(dpath="protocol/filter", within=config),
        seed=run_seed,
    script:
        "../scripts/filter.py"
