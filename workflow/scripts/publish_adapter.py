import json
from pathlib import Path

from sublim import publish
from sublim.logs import log_to
from sublim.jsonl import write_json
from sublim.provenance import checked_inputs
from sublim.secrets import guard_outputs

log_to(snakemake.log[0])
guard_outputs()
p, w = snakemake.params, snakemake.wildcards
checked_inputs(snakemake.input.adapters)
hub = publish.open_configured_hub(snakemake.config)
dataset_repo = json.loads(Path(snakemake.input.dataset_flag).read_text())["repo_id"]
folders = sorted({str(Path(f).parent) for f in snakemake.input.adapters})
adapter_dirs = {int(Path(d).name.removeprefix("epoch-")): d for d in folders}
record = publish.publish_adapter(hub, repo=p.repo, dataset_repo=dataset_repo, adapter_dirs=adapter_dirs,
                                 size=w.size, condition=w.condition, run=int(w.run), model=p.model,
                                 training=p.training, private=p.private)
write_json(snakemake.output.flag, record)
