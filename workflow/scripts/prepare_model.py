from sublim.logs import start_job
from sublim.models import ensure_model, model_fingerprint, model_id, write_model_record
from sublim.provenance import write_provenance

start_job(snakemake.log[0], snakemake.threads)
p = snakemake.params
if model_id(p.model) != snakemake.wildcards.model_id:
    raise ValueError(f"{snakemake.output.record} names model {snakemake.wildcards.model_id}, but the config's "
                     f"models.{snakemake.wildcards.size} is model {model_id(p.model)}: ask for the workflow's targets")
model_dir = ensure_model(p.model, p.model_dir)
write_model_record(snakemake.output.record, p.model, model_dir)
write_provenance(snakemake.output.provenance, stage="prepare_model", model=p.model,
                 inputs={p.model_dir: model_fingerprint(p.model, model_dir)}, outputs=[snakemake.output.record])
