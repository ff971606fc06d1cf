from sublim.atomic import atomic_output
from sublim.jsonl import read_jsonl
from sublim.logs import log_to
from sublim.provenance import checked_inputs
from sublim.scoring import preference_table

log_to(snakemake.log[0])
p = snakemake.params
checked_inputs([snakemake.input.answers])
answers = read_jsonl(snakemake.input.answers, required=("epoch", "answer"))
table = preference_table(answers, p.animals, p.scoring, size=snakemake.wildcards.size, condition=p.condition,
                         run=int(p.run))
with atomic_output(snakemake.output.table) as partial:
    table.to_csv(partial, index=False)
