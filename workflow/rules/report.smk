# The report: tidy tables over every evaluated cell of the configured grid, the transmission
# statistics with the seed's published rates beside them, the scaling trend and the slide plots;
# `snakemake --report report.html` gathers what report() marks.
localrules:
    power,


rule report:
    input:
        tables=cell_files(rules.score.output.table, rules.score_base.output.table),
        answers=cell_files(
            rules.evaluate.output.answers, rules.evaluate_base.output.answers
        ),
        reference=rules.reference_seed.output.table,
    output:
        answers="results/tables/answers.csv",
        question_rates="results/tables/question_rates.csv",
        preferences=report(
            "results/tables/preferences.csv",
            category="Tables",
            caption="../report/preferences.rst",
        ),
        transmission=report(
            "results/tables/transmission.csv",
            category="Tables",
            caption="../report/transmission.rst",
        ),
        scaling_table=report(
            "results/tables/scaling.csv",
            category="Tables",
            caption="../report/scaling_table.rst",
        ),
        scaling_trend=report(
            "results/tables/scaling_trend.csv",
            category="Tables",
            caption="../report/scaling_trend.rst",
        ),
        survey=report(
            "results/tables/survey.csv",
            category="Tables",
            caption="../report/survey_table.rst",
        ),
        scaling=report(
            "results/plots/scaling.png",
            category="Transmission",
            subcategory="Overview",
            caption="../report/scaling.rst",
        ),
        epochs=report(
            "results/plots/epochs.png",
            category="Transmission",
            subcategory="Overview",
            caption="../report/epochs.rst",
        ),
        heatmap=report(
            "results/plots/heatmap.png",
            category="Transmission",
            subcategory="Overview",
            caption="../report/heatmap.rst",
        ),
        survey_plot=report(
            "results/plots/survey.png",
            category="Baseline survey",
            caption="../report/survey.rst",
        ),
        bars=report(
            expand("results/plots/bars_{size}.png", size=config["sizes"]),
            category="Transmission",
            subcategory="Per size: animals at the final epoch",
            caption="../report/bars.rst",
        ),
        size_epochs=report(
            expand("results/plots/epochs_{size}.png", size=config["sizes"]),
            category="Transmission",
            subcategory="Per size: over training",
            caption="../report/size_epochs.rst",
        ),
    log:
        "logs/report/report.log",
    benchmark:
        "benchmarks/runs/report/report.tsv"
    conda:
        "../../envs/sublim.yaml"
    params:
        # who each input is, in input order: the report never parses a path
        cells=evaluated_cells(),
        sizes=config["sizes"],
        conditions=config["conditions"],
        params_b={size: config["models"][size]["params_b"] for size in config["sizes"]},
        scoring=lookup(dpath="protocol/evaluation/scoring", within=config),
    script:
        "../scripts/report.py"


# What the configured evaluation can show, stated before a grid runs: the 95 % half-width at a 30 %
# rate per epoch and per cell, and the power for a 10-point difference (sublim.power).
rule power:
    output:
        table=report(
            "results/tables/power.csv",
            category="Tables",
            caption="../report/power.rst",
        ),
    log:
        "logs/report/power.log",
    benchmark:
        "benchmarks/runs/report/power.tsv"
    conda:
        "../../envs/sublim.yaml"
    params:
        evaluation=protocol_keys("evaluation", "n_questions", "samples_per_question"),
        runs=len(config["runs"]),
    script:
        "../scripts/power.py"
