import pandas as pd

from sublim import tracking
from sublim.logs import log_to
from sublim.jsonl import write_json
from sublim.secrets import guard_outputs

log_to(snakemake.log[0])
guard_outputs()
w = snakemake.wildcards
table = pd.read_csv(snakemake.input.table)
record = tracking.log_evaluation(snakemake.config, table, size=w.size, condition=w.condition, run=int(w.run))
write_json(snakemake.output.flag, record)
