from sublim.atomic import atomic_output
from sublim.backends import explain_oom
from sublim.devices import claim_gpus
from sublim.logs import start_job
from sublim.evaluate import students_of
from sublim.p_animal import answer_probabilities, cell_table
from sublim.process import die_with_parent_if_spawned
from sublim.provenance import write_provenance


# Where vLLM spawns its engine process, that one imports this script again as __mp_main__ (sublim.process).
die_with_parent_if_spawned(__name__)


def main():
    start_job(snakemake.log[0], snakemake.threads)
    claim_gpus(snakemake.config, snakemake.resources, snakemake.log[0])
    p = snakemake.params
    students = students_of(p.model, p.model_dir, p.epochs, snakemake.input.get("adapters", []),
                           snakemake.input.get("adapter_configs", []))
    with explain_oom("evaluate", snakemake.wildcards.size):
        backend = students.open_backend(snakemake.config, snakemake.wildcards.size)
        rows, terms = answer_probabilities(backend, students.by_epoch, p.n_questions, list(p.animals))
    with atomic_output(snakemake.output.table) as partial:
        cell_table(rows, snakemake.wildcards.size, p.condition, int(p.run)).to_csv(partial, index=False)
    write_provenance(snakemake.output.provenance, stage="p_animal", backend=backend.name, model=p.model,
                     n_questions=p.n_questions, adapters=students.adapter_dirs, inputs=students.inputs,
                     outputs=[snakemake.output.table], protocol=snakemake.config["protocol"],
                     terms=[{"animal": t.animal, "text": t.text, "tokens": list(t.tokens), "sign": t.sign}
                            for t in terms])
    backend.close()


if __name__ == "__main__":
    main()
