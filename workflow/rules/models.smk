rule prepare_model:
    output:
        model_dir=directory("resources/models/{size}"),
    params:
        model=model_for,
    log:
        "logs/prepare_model/{size}.log",
    benchmark:
        "benchmarks/runs/prepare_model/{size}.tsv"
    conda:
        "../../envs/sublim.yaml"
    resources:
        mem_mb=mem_mb,
    script:
        "../scripts/prepare_model.py"
