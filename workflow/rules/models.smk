# A size's model as a plain transformers folder (MODEL_DIR), and the record of which model it is.
# The jobs that load the model depend on the record, named after the model's identity, not on the
# folder: deleting the folder to free disk reruns nothing (the next job that needs it prepares it
# again, sublim.models.ensure_model), and a changed or mistyped models.<size> asks for another record.
rule prepare_model:
    output:
        record="results/models/{size}/{model_id}.json",
        provenance="results/models/{size}/{model_id}.provenance.json",
    log:
        "logs/prepare_model/{size}/{model_id}.log",
    benchmark:
        "benchmarks/runs/prepare_model/{size}/{model_id}.tsv"
    conda:
        "../../envs/sublim.yaml"
    threads: 8
    resources:
        mem_mb=mem_mb,
    params:
        model=model_source,
        model_dir=MODEL_DIR,
    script:
        "../scripts/prepare_model.py"


# `snakemake models`: every size's model prepared, e.g. on a machine with network before the grid
rule models:
    input:
        [model_record_of(size) for size in config["sizes"]],
