from sublim.logs import start_job
from sublim.models import prepare_model

start_job(snakemake.log[0], snakemake.threads)
prepare_model(snakemake.params.model, snakemake.output.model_dir)
