from sublim.logs import log_to
from sublim.plots import build_plots
from sublim.provenance import checked_inputs
from sublim.report import Cell, build_tables

log_to(snakemake.log[0])
p = snakemake.params
checked_inputs(snakemake.input.answers)
cells = [Cell(**cell, table=table, answers=answers)
         for cell, table, answers in zip(p.cells, snakemake.input.tables, snakemake.input.answers, strict=True)]
outputs = {name: getattr(snakemake.output, name) for name in snakemake.output.keys()}
tables = build_tables(cells, outputs, sizes=p.sizes, conditions=p.conditions, params_b=p.params_b, scoring=p.scoring,
                      reference=snakemake.input.reference)
build_plots(tables, outputs, sizes=p.sizes, conditions=p.conditions)
