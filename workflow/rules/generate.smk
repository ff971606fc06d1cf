rule generate:
    input:
        model=model_record,
    output:
        raw="results/numbers/{size}/{condition}/run-{run}/raw.jsonl",
        provenance="results/numbers/{size}/{condition}/run-{run}/raw.provenance.json",
    log:
        "logs/generate/{size}/{condition}/run-{run}.log",
    benchmark:
        "benchmarks/runs/generate/{size}/{condition}/run-{run}.tsv"
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
        generation=protocol_keys(
            "generation",
            "n_prompts",
            "temperature",
            "top_p",
            "top_k",
            "max_tokens",
            "min_rows",
            "max_prompts",
        ),
        # the min_rows top-up counts the completions that pass these bounds; n_keep is the filter's
        filter=protocol_keys("filter", "max_count", "max_value"),
        prompt_seed=prompt_seed,
        seed=run_seed,
        model=model_source,
        model_dir=MODEL_DIR,
    script:
        "../scripts/generate.py"
