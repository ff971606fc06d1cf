from sublim import publish
from sublim.logs import log_to
from sublim.jsonl import write_json
from sublim.secrets import guard_outputs

log_to(snakemake.log[0])
guard_outputs()
p = snakemake.params
hub = publish.open_configured_hub(snakemake.config)
record = publish.publish_collections(hub, owner=p.owner, run=int(snakemake.wildcards.run), titles=p.titles,
                                     dataset_flags=snakemake.input.datasets,
                                     adapter_flags=snakemake.input.adapters, private=p.private)
write_json(snakemake.output.flag, record)
