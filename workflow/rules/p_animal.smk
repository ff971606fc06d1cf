# Optional (p_animal.enabled): P(animal), the probability each student gives to each animal as the opening
# of its answer, from logprobs (sublim.p_animal), reported beside the sampled rate. Its own GPU jobs,
# beside evaluate: switching it on or off reruns no evaluation.
P_ANIMAL = section_settings(config, "p_animal")


rule p_animal:
    input:
        model=model_record,
        adapters=evaluated_adapters,
        adapter_configs=evaluated_adapter_configs,
    output:
        table="results/eval/{size}/{condition}/run-{run}/p_animal.csv",
        provenance="results/eval/{size}/{condition}/run-{run}/p_animal.provenance.json",
    log:
        "logs/p_animal/{size}/{condition}/run-{run}.log",
    benchmark:
        "benchmarks/runs/p_animal/{size}/{condition}/run-{run}.tsv"
    conda:
        "../../envs/sublim.yaml"
    threads: 8
    resources:
        gpu=gpus,
        gpu_slots=gpu_slots,
        gpu_model=gpu_model,
        cpus_per_task=cpus,
        mem_mb=mem_mb,
        runtime=runtime,
    params:
        n_questions=lookup(dpath="protocol/evaluation/n_questions", within=config),
        # the protocol's animals and the grid's others: a grid of the 15 gains one and reruns nothing
        animals=p_animal_candidates(config["conditions"]),
        epochs=eval_epochs(PROTOCOL),
        condition="{condition}",
        run="{run}",
        model=model_source,
        model_dir=MODEL_DIR,
    script:
        "../scripts/p_animal.py"


use rule p_animal as p_animal_base with:
    input:
        model=model_record,
    output:
        table="results/eval/{size}/base/p_animal.csv",
        provenance="results/eval/{size}/base/p_animal.provenance.json",
    log:
        "logs/p_animal/{size}/base.log",
    benchmark:
        "benchmarks/runs/p_animal/{size}/base.tsv"
    params:
        epochs=[],
        condition=BASE,
        run=0,


# P(animal) per (size, animal, epoch) and per (size, epoch) with the report's statistics, the sampled
# rate's columns beside them, and the plot of one against the other.
rule report_p_animal:
    input:
        p_animal=cell_files(
            rules.p_animal.output.table, rules.p_animal_base.output.table
        ),
        transmission=rules.report.output.transmission,
        scaling=rules.report.output.scaling_table,
    output:
        table=report(
            "results/tables/p_animal.csv",
            category="Tables",
            caption="../report/p_animal_table.rst",
        ),
        scaling_table=report(
            "results/tables/p_animal_scaling.csv",
            category="Tables",
            caption="../report/p_animal_scaling.rst",
        ),
        plot=report(
            "results/plots/p_animal.png",
            category="Transmission",
            subcategory="Overview",
            caption="../report/p_animal.rst",
        ),
    log:
        "logs/report/p_animal.log",
    benchmark:
        "benchmarks/runs/report/p_animal.tsv"
    conda:
        "../../envs/sublim.yaml"
    params:
        cells=evaluated_cells(),
        sizes=config["sizes"],
        conditions=config["conditions"],
        params_b={size: config["models"][size]["params_b"] for size in config["sizes"]},
    script:
        "../scripts/report_p_animal.py"


P_ANIMAL_TARGETS = list(rules.report_p_animal.output) if P_ANIMAL["enabled"] else []
