from sublim.logs import log_to
from sublim.report import build_report

log_to(snakemake.log[0])
p = snakemake.params
outputs = {name: getattr(snakemake.output, name) for name in snakemake.output.keys()}
build_report(snakemake.input.tables, outputs, sizes=p.sizes, conditions=p.conditions, params_b=p.params_b,
             scoring=p.scoring)
