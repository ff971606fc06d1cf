from sublim.logs import log_to
from sublim.power import power_table

log_to(snakemake.log[0])
power_table(snakemake.params.evaluation, snakemake.params.runs).to_csv(snakemake.output.table, index=False)
