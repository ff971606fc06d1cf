# The report: tidy tables over every evaluated cell of the configured grid, the transmission
# statistics and the slide plots; `snakemake --report report.html` gathers what report() marks.
TABLES = "results/tables"
PLOTS = "results/plots"


REPORT_OUTPUTS = (
    expand(
        f"{TABLES}/{{name}}.csv",
        name=[
            "answers",
            "question_rates",
            "preferences",
            "transmission",
            "scaling",
            "survey",
        ],
    )
    + expand(f"{PLOTS}/{{name}}.png", name=["scaling", "epochs", "heatmap", "survey"])
    + size_plots("bars")
    + size_plots("epochs")
)


rule report:
    input:
        tables=eval_tables(),
        answers=eval_answers(),
    output:
        answers=f"{TABLES}/answers.csv",
        question_rates=f"{TABLES}/question_rates.csv",
        preferences=report(
            f"{TABLES}/preferences.csv",
            category="Tables",
            caption="../report/preferences.rst",
        ),
        transmission=report(
            f"{TABLES}/transmission.csv",
            category="Tables",
            caption="../report/transmission.rst",
        ),
        scaling_table=report(
            f"{TABLES}/scaling.csv",
            category="Tables",
            caption="../report/scaling_table.rst",
        ),
        survey=report(
            f"{TABLES}/survey.csv",
            category="Tables",
            caption="../report/survey_table.rst",
        ),
        scaling=report(
            f"{PLOTS}/scaling.png",
            category="Transmission",
            subcategory="Overview",
            caption="../report/scaling.rst",
        ),
        epochs=report(
            f"{PLOTS}/epochs.png",
            category="Transmission",
            subcategory="Overview",
            caption="../report/epochs.rst",
        ),
        heatmap=report(
            f"{PLOTS}/heatmap.png",
            category="Transmission",
            subcategory="Overview",
            caption="../report/heatmap.rst",
        ),
        survey_plot=report(
            f"{PLOTS}/survey.png",
            category="Baseline survey",
            caption="../report/survey.rst",
        ),
        bars=report(
            size_plots("bars"),
            category="Transmission",
            subcategory="Per size: animals at the final epoch",
            caption="../report/bars.rst",
        ),
        size_epochs=report(
            size_plots("epochs"),
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
        sizes=config["sizes"],
        conditions=config["conditions"],
        params_b={size: config["models"][size]["params_b"] for size in config["sizes"]},
        scoring=lookup(dpath="protocol/evaluation/scoring", within=config),
    script:
        "../scripts/report.py"
