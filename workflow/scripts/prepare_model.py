from sublim.logs import log_to
from sublim.models import prepare_model

log_to(snakemake.log[0])
prepare_model(snakemake.params.model, snakemake.output.model_dir)
