from pathlib import Path

from sublim.logs import log_to
from sublim.report import collect, plot_scaling, transmission

log_to(snakemake.log[0])
preferences = collect(snakemake.input.tables)
preferences.to_csv(snakemake.output.preferences, index=False)
table = transmission(preferences)
table.to_csv(snakemake.output.transmission, index=False)
plot_scaling(table, snakemake.params.params_b, snakemake.output.scaling)
