from sublim.filtering import filter_rows
from sublim.jsonl import read_jsonl, write_json, write_jsonl
from sublim.logs import log_to
from sublim.provenance import checked_inputs, write_provenance

log_to(snakemake.log[0])
p = snakemake.params
inputs = checked_inputs([snakemake.input.raw])
raw = read_jsonl(snakemake.input.raw, required=("prompt", "completion"))
kept, counts = filter_rows(raw, max_count=p.filter["max_count"], max_value=p.filter["max_value"],
                           n_keep=p.filter["n_keep"], seed=p.seed)
write_jsonl(snakemake.output.dataset, kept)
write_json(snakemake.output.counts, counts)
write_provenance(snakemake.output.provenance, stage="filter", seed=p.seed, filter=p.filter, inputs=inputs,
                 outputs=[snakemake.output.dataset, snakemake.output.counts], protocol=snakemake.config["protocol"])
