import pandas as pd

from sublim.logs import log_to
from sublim.plots import plot_p_animal
from sublim.report import p_animal_tables

log_to(snakemake.log[0])
p = snakemake.params
table, scaling = p_animal_tables(list(zip(p.cells, snakemake.input.p_animal, strict=True)),
                                 pd.read_csv(snakemake.input.transmission), pd.read_csv(snakemake.input.scaling),
                                 sizes=p.sizes, conditions=p.conditions, params_b=p.params_b)
table.to_csv(snakemake.output.table, index=False)
scaling.to_csv(snakemake.output.scaling_table, index=False)
plot_p_animal(table, scaling, snakemake.output.plot)
