from sublim.config import sizing_for
from sublim.backends import Sampling, explain_oom, open_backend
from sublim.generate import generate_rows
from sublim.jsonl import write_jsonl
from sublim.devices import claim_gpus
from sublim.logs import start_job
from sublim.models import ensure_model, model_fingerprint
from sublim.process import die_with_parent_if_spawned
from sublim.provenance import write_provenance


# Where vLLM spawns its engine process (sublim.process), that one imports this script again as
# __mp_main__: only the main process runs the job, and the engine dies with it.
die_with_parent_if_spawned(__name__)


def main():
    start_job(snakemake.log[0], snakemake.threads)
    claim_gpus(snakemake.config, snakemake.resources, snakemake.log[0])
    p = snakemake.params
    sizing = sizing_for(snakemake.config, snakemake.wildcards.size)
    model_dir = ensure_model(p.model, p.model_dir)
    with explain_oom("generate", snakemake.wildcards.size):
        backend = open_backend(snakemake.config["backend"], str(model_dir), sizing, stage="generate")
        rows = generate_rows(backend, snakemake.wildcards.condition, p.generation, p.filter,
                             prompt_seed=p.prompt_seed, sample_seed=p.seed)
    write_jsonl(snakemake.output.raw, rows)
    write_provenance(snakemake.output.provenance, stage="generate", backend=backend.name,
                     sampler=backend.sampler(Sampling.from_protocol(p.generation)), model=p.model,
                     condition=snakemake.wildcards.condition, run=int(snakemake.wildcards.run),
                     prompt_seed=p.prompt_seed, seed=p.seed, generation=p.generation, n_rows=len(rows),
                     inputs={p.model_dir: model_fingerprint(p.model, model_dir)}, outputs=[snakemake.output.raw],
                     protocol=snakemake.config["protocol"])
    backend.close()


if __name__ == "__main__":
    main()
