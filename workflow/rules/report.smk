REPORT_OUTPUTS = [
    "results/tables/preferences.csv",
    "results/tables/transmission.csv",
    "results/plots/scaling.png",
]


rule report:
    input:
        tables=eval_tables(),
    output:
        preferences="results/tables/preferences.csv",
        transmission="results/tables/transmission.csv",
        scaling=report(
            "results/plots/scaling.png",
            category="Scaling",
            caption="../report/scaling.rst",
        ),
    log:
        "logs/report/report.log",
    benchmark:
        "benchmarks/runs/report/report.tsv"
    conda:
        "../../envs/sublim.yaml"
    params:
        params_b={size: config["models"][size]["params_b"] for size in config["sizes"]},
    script:
        "../scripts/report.py"
