from sublim import publish
from sublim.logs import log_to
from sublim.jsonl import write_json
from sublim.provenance import checked_inputs
from sublim.secrets import guard_outputs

log_to(snakemake.log[0])
guard_outputs()
p, w = snakemake.params, snakemake.wildcards
checked_inputs([snakemake.input.raw, snakemake.input.dataset])
hub = publish.open_configured_hub(snakemake.config)
record = publish.publish_dataset(hub, repo=p.repo, raw=snakemake.input.raw, dataset=snakemake.input.dataset,
                                 filter_json=snakemake.input.filter, filter_settings=p.filter, size=w.size,
                                 condition=w.condition, run=int(w.run), model=p.model, private=p.private)
write_json(snakemake.output.flag, record)
