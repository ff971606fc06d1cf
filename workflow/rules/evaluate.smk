# Every evaluated epoch's adapter is asked in one engine (LoRA swapping); the untuned base model
# once per size. The GPU job writes the answers only: scoring them is the score rule's (CPU), so
# neither the scoring method nor the list of animals reruns it.
rule evaluate:
    input:
        model=model_record,
        adapters=evaluated_adapters,
        adapter_configs=evaluated_adapter_configs,
    output:
        answers="results/eval/{size}/{condition}/run-{run}/answers.jsonl",
        provenance="results/eval/{size}/{condition}/run-{run}/eval.provenance.json",
    log:
        "logs/evaluate/{size}/{condition}/run-{run}.log",
    benchmark:
        "benchmarks/runs/evaluate/{size}/{condition}/run-{run}.tsv"
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
        evaluation=protocol_keys(
            "evaluation",
            "n_questions",
            "samples_per_question",
            "temperature",
            "top_p",
            "top_k",
            "max_tokens",
        ),
        epochs=eval_epochs(PROTOCOL),
        seed=run_seed,
        model=model_source,
        model_dir=MODEL_DIR,
    script:
        "../scripts/evaluate.py"


use rule evaluate as evaluate_base with:
    input:
        model=model_record,
    output:
        answers="results/eval/{size}/base/answers.jsonl",
        provenance="results/eval/{size}/base/eval.provenance.json",
    log:
        "logs/evaluate/{size}/base.log",
    benchmark:
        "benchmarks/runs/evaluate/{size}/base.tsv"
    params:
        epochs=[],
        seed=seed_for(PROTOCOL["seed"], 0),
