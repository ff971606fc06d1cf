from pathlib import Path

from sublim.backends import explain_oom, open_backend
from sublim.config import sizing_for
from sublim.evaluate import evaluate_students
from sublim.jsonl import write_jsonl
from sublim.devices import claim_gpus
from sublim.logs import start_job
from sublim.models import ensure_model, model_fingerprint
from sublim.process import die_with_parent_if_spawned
from sublim.provenance import checked_inputs, write_provenance
from sublim.scoring import with_parsed_animal


# vLLM spawns its engine process, which imports this script again as __mp_main__: only the main
# process runs the job, and the engine dies with it (sublim.process).
die_with_parent_if_spawned(__name__)


def main():
    start_job(snakemake.log[0], snakemake.threads)
    claim_gpus(snakemake.config, snakemake.resources, snakemake.log[0])
    p = snakemake.params
    sizing = sizing_for(snakemake.config, snakemake.wildcards.size)
    adapter_dirs = {f"epoch-{e}": str(Path(f).parent) for e, f in zip(p.epochs, snakemake.input.get("adapters", []))}
    # epoch -> adapter name; the untuned base model is epoch 0 with no adapter
    students = {e: f"epoch-{e}" for e in p.epochs} or {0: None}
    model_dir = str(ensure_model(p.model, p.model_dir))
    adapter_files = [*snakemake.input.get("adapters", []), *snakemake.input.get("adapter_configs", [])]
    inputs = {p.model_dir: model_fingerprint(p.model, model_dir), **checked_inputs(adapter_files)}
    with explain_oom("evaluate", snakemake.wildcards.size):
        backend = open_backend(snakemake.config["backend"], model_dir, sizing, adapter_dirs, stage="evaluate")
        answers = evaluate_students(backend, students, p.evaluation, p.seed)
    write_jsonl(snakemake.output.answers, with_parsed_animal(answers))
    write_provenance(snakemake.output.provenance, stage="evaluate", backend=backend.name, model=p.model,
                     seed=p.seed, evaluation=p.evaluation, adapters=adapter_dirs, inputs=inputs,
                     outputs=[snakemake.output.answers], protocol=snakemake.config["protocol"])
    backend.close()


if __name__ == "__main__":
    main()
