# Scoring one cell's answers for the grid's animals: CPU, seconds, run where Snakemake runs. A new
# animal or another scoring method re-scores every cell and asks no model again.
localrules:
    score,
    score_base,


rule score:
    input:
        answers=rules.evaluate.output.answers,
    output:
        table="results/eval/{size}/{condition}/run-{run}/eval.csv",
    log:
        "logs/score/{size}/{condition}/run-{run}.log",
    benchmark:
        "benchmarks/runs/score/{size}/{condition}/run-{run}.tsv"
    conda:
        "../../envs/sublim.yaml"
    params:
        animals=animals(config["conditions"]),
        scoring=lookup(dpath="protocol/evaluation/scoring", within=config),
        condition="{condition}",
        run="{run}",
    script:
        "../scripts/score.py"


use rule score as score_base with:
    input:
        answers=rules.evaluate_base.output.answers,
    output:
        table="results/eval/{size}/base/eval.csv",
    log:
        "logs/score/{size}/base.log",
    benchmark:
        "benchmarks/runs/score/{size}/base.tsv"
    params:
        condition=BASE,
        run=0,
