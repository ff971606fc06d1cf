# Every evaluated epoch's adapter is asked in one engine (LoRA swapping); the untuned base model
# once per size.
rule evaluate:
    input:
        model_dir="resources/models/{size}",
        adapters=evaluated_adapters,
    output:
        answers=f"results/eval/{CELL}/answers.jsonl",
        table=f"results/eval/{CELL}/eval.csv",
        provenance=f"results/eval/{CELL}/eval.provenance.json",
    log:
        f"logs/evaluate/{CELL}.log",
    benchmark:
        f"benchmarks/runs/evaluate/{CELL}.tsv"
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
        evaluation=lookup(dpath="protocol/evaluation", within=config),
        epochs=eval_epochs(PROTOCOL),
        animals=animals(config),
        condition="{condition}",
        run="{run}",
        seed=run_seed,
        model=model_for,
    script:
        "../scripts/evaluate.py"


rule evaluate_base:
    input:
        model_dir="resources/models/{size}",
    output:
        answers="results/eval/{size}/base/answers.jsonl",
        table="results/eval/{size}/base/eval.csv",
        provenance="results/eval/{size}/base/eval.provenance.json",
    log:
        "logs/evaluate/{size}/base.log",
    benchmark:
        "benchmarks/runs/evaluate/{size}/base.tsv"
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
        evaluation=lookup(dpath="protocol/evaluation", within=config),
        epochs=[],
        animals=animals(config),
        condition="base",
        run=0,
        seed=seed_for(PROTOCOL["seed"], 0),
        model=model_for,
    script:
        "../scripts/evaluate.py"
