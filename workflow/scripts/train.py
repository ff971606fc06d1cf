from sublim.config import sizing_for
from sublim.devices import claim_gpus
from sublim.locks import hold_until_exit
from sublim.logs import start_job
from sublim.mps import join_if_wanted as join_mps_if_wanted

start_job(snakemake.log[0], snakemake.threads)
# one trainer per cell: a second one (a second Snakemake after --unlock) stops here, deleting nothing
hold_until_exit(snakemake.params.resume_dir + ".lock", f"a training of {snakemake.params.resume_dir}", prune=3)
claim_gpus(snakemake.config, snakemake.resources, snakemake.log[0])
sizing = sizing_for(snakemake.config, snakemake.wildcards.size)
under_mps = join_mps_if_wanted(sizing)  # before any import that may start CUDA

from sublim.backends import explain_oom  # noqa: E402
from sublim.models import ensure_model, model_fingerprint  # noqa: E402
from sublim.provenance import checked_inputs, write_provenance  # noqa: E402
from sublim.tracking import training_run  # noqa: E402
from sublim.train import train_student  # noqa: E402

p = snakemake.params
adapter_dirs = [path.rsplit("/", 1)[0] for path in snakemake.output.adapters]
w = snakemake.wildcards
model_dir = ensure_model(p.model, p.model_dir)
inputs = {p.model_dir: model_fingerprint(p.model, model_dir), **checked_inputs([snakemake.input.dataset])}
# wandb settings come from the config, not params: switching tracking on must not retrain
with explain_oom("train", w.size), training_run(
    snakemake.config, size=w.size, condition=w.condition, run=int(w.run),
    hyperparameters={"training": p.training, "seed": p.seed, "model": p.model},
) as tracker:
    metrics = train_student(str(model_dir), snakemake.input.dataset,
                            adapter_dirs, p.resume_dir, p.training, sizing, p.seed, **tracker)
write_provenance(snakemake.output.provenance, stage="train", model=p.model, seed=p.seed,
                 training=p.training, sizing=sizing, mps_client=under_mps, metrics=metrics, inputs=inputs,
                 outputs=[*snakemake.output.adapters, *snakemake.output.configs], protocol=snakemake.config["protocol"])
