# One job trains every epoch; each epoch's adapter is a file target of its own (those keep_adapters
# does not keep are temp files). The trainer's resume state lives under resources/resume/, which the
# rule does not declare, so Snakemake keeps it when a killed job is rerun; a lock beside it (the
# job holds it while it lives) stops a second trainer of the cell.
rule train:
    input:
        model=model_record,
        dataset=rules.filter.output.dataset,
    output:
        adapters=epoch_files(
            "results/students/{{size}}/{{condition}}/run-{{run}}/epoch-{epoch}/adapter_model.safetensors"
        ),
        configs=epoch_files(
            "results/students/{{size}}/{{condition}}/run-{{run}}/epoch-{epoch}/adapter_config.json"
        ),
        provenance="results/students/{size}/{condition}/run-{run}/train.provenance.json",
    log:
        "logs/train/{size}/{condition}/run-{run}.log",
    benchmark:
        "benchmarks/runs/train/{size}/{condition}/run-{run}.tsv"
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
        model=model_source,
        model_dir=MODEL_DIR,
        resume_dir="resources/resume/{size}/{condition}/run-{run}",
    script:
        "../scripts/train.py"
