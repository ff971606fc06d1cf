from sublim.backends import explain_oom
from sublim.config import sizing_for
from sublim.logs import start_job
from sublim.models import check_model_dir
from sublim.provenance import write_provenance
from sublim.tracking import training_run
from sublim.train import train_student

start_job(snakemake.log[0], snakemake.threads)
p = snakemake.params
sizing = sizing_for(snakemake.config, snakemake.wildcards.size)
adapter_dirs = [path.rsplit("/", 1)[0] for path in snakemake.output.adapters]
w = snakemake.wildcards
# wandb settings come from the config, not params: switching tracking on must not retrain
with explain_oom("train", w.size), training_run(
    snakemake.config, size=w.size, condition=w.condition, run=int(w.run),
    hyperparameters={"training": p.training, "seed": p.seed, "model": p.model},
) as tracker:
    metrics = train_student(str(check_model_dir(snakemake.input.model_dir)), snakemake.input.dataset,
                            adapter_dirs, p.resume_dir, p.training, sizing, p.seed, **tracker)
write_provenance(snakemake.output.provenance, stage="train", model=p.model, seed=p.seed,
                 training=p.training, sizing=sizing, metrics=metrics)
