from pathlib import Path

from sublim.atomic import atomic_output
from sublim.backends import explain_oom, open_backend
from sublim.config import sizing_for
from sublim.devices import claim_gpus
from sublim.logs import start_job
from sublim.models import ensure_model, model_fingerprint
from sublim.p_animal import answer_probabilities, cell_table
from sublim.process import die_with_parent_if_spawned
from sublim.provenance import checked_inputs, write_provenance


# vLLM spawns its engine process, which imports this script again as __mp_main__ (sublim.process).
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
        rows, terms = answer_probabilities(backend, students, p.n_questions, list(p.animals))
    with atomic_output(snakemake.output.table) as partial:
        cell_table(rows, snakemake.wildcards.size, p.condition, int(p.run)).to_csv(partial, index=False)
    write_provenance(snakemake.output.provenance, stage="p_animal", backend=backend.name, model=p.model,
                     n_questions=p.n_questions, adapters=adapter_dirs, inputs=inputs,
                     outputs=[snakemake.output.table], protocol=snakemake.config["protocol"],
                     terms=[{"animal": t.animal, "text": t.text, "tokens": list(t.tokens), "sign": t.sign}
                            for t in terms])
    backend.close()


if __name__ == "__main__":
    main()
