from sublim.logs import log_to
from sublim.reference import write_reference_table

log_to(snakemake.log[0])
write_reference_table(snakemake.output.table, snakemake.params.animals, snakemake.params.scoring)
