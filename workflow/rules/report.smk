# The report: tidy tables over every evaluated cell of the configured grid, the transmission
# statistics and the slide plots; `snakemake --report report.html` gathers what report() marks.
rule report:
    input:
        tables=cell_files(rules.score.output.table, rules.score_base.output.table),
        answers=cell_files(
            rules.evaluate.output.answers, rules.evaluate_base.output.answers
        ),
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
