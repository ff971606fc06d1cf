rule generate:
    input:
        model_dir="resources/models/{size}",
    output:
        raw=f"results/numbers/{CELL}/raw.jsonl",
        provenance=f"results/numbers/{CELL}/raw.provenance.json",
    log:
        f"logs/generate/{CELL}.log",
    benchmark:
        f"benchmarks/runs/generate/{CELL}.tsv"
    conda:
        "../../envs/sublim.yaml"
    threads: 8
    resources:
        gpu=gpus,
        gpu_slots=gpu_slots,
        gpu_model=gpu_model,
        cpus_per_task=cpus,
        mem_mb=mem_mb,
        runtime=runtime,
    params:
        generation=lookup(dpath="protocol/generation", within=config),
        filter=lookup(dpath="protocol/filter", within=config),
        prompt_seed=prompt_seed,
        seed=run_seed,
        model=model_for,
    script:
        "../scripts/generate.py"
