rule prepare_model:
    output:
        model_dir=directory("resources/models/{size}"),
    log:
        "logs/prepare_model/{size}.log",
    benchmark:
        "benchmarks/runs/prepare_model/{size}.tsv"
    conda:
        "../../envs/sublim.yaml"
    threads: 8
    resources:
        mem_mb=mem_mb,
    params:
        model=model_source,
    script:
        "../scripts/prepare_model.py"
