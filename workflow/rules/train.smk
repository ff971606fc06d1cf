# One job trains every epoch; each epoch's adapter is a file target of its own. The trainer's
# resume state lives under resources/resume/, which the rule does not declare, so Snakemake keeps
# it when a killed job is rerun.
rule train:
    input:
        model_dir="resources/models/{size}",
        dataset=f"results/numbers/{CELL}/dataset.jsonl",
    output:
        adapters=expand(
            "results/students/{{size}}/{{condition}}/run-{{run}}/epoch-{epoch}/adapter_model.safetensors",
            epoch=EPOCHS,
        ),
        configs=expand(
            "results/students/{{size}}/{{condition}}/run-{{run}}/epoch-{epoch}/adapter_config.json",
            epoch=EPOCHS,
        ),
        provenance=f"results/students/{CELL}/train.provenance.json",
    log:
        f"logs/train/{CELL}.log",
    benchmark:
        f"benchmarks/runs/train/{CELL}.tsv"
    conda:
        "../../envs/sublim.yaml"
    threads: train_cpu_threads
    resources:
        gpu=gpus,
        gpu_slots=train_slots,
        gpu_model=gpu_model,
        cpus_per_task=cpus,
        mem_mb=mem_mb,
        runtime=runtime,
    params:
        training=lookup(dpath="protocol/training", within=config),
        seed=run_seed,
        model=model_for,
        resume_dir=f"resources/resume/{CELL}",
    script:
        "../scripts/train.py"
