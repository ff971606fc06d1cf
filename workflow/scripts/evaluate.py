from sublim.backends import Sampling, explain_oom
from sublim.evaluate import evaluate_students, students_of
from sublim.jsonl import write_jsonl
from sublim.devices import claim_gpus
from sublim.logs import start_job
from sublim.process import die_with_parent_if_spawned
from sublim.provenance import write_provenance
from sublim.scoring import with_parsed_animal


# Where vLLM spawns its engine process (sublim.process), that one imports this script again as
# __mp_main__: only the main process runs the job, and the engine dies with it.
die_with_parent_if_spawned(__name__)


def main():
    start_job(snakemake.log[0], snakemake.threads)
    claim_gpus(snakemake.config, snakemake.resources, snakemake.log[0])
    p = snakemake.params
    students = students_of(p.model, p.model_dir, p.epochs, snakemake.input.get("adapters", []),
                           snakemake.input.get("adapter_configs", []))
    with explain_oom("evaluate", snakemake.wildcards.size):
        backend = students.open_backend(snakemake.config, snakemake.wildcards.size)
        answers = evaluate_students(backend, students.by_epoch, p.evaluation, p.seed)
    write_jsonl(snakemake.output.answers, with_parsed_animal(answers))
    write_provenance(snakemake.output.provenance, stage="evaluate", backend=backend.name,
                     sampler=backend.sampler(Sampling.from_protocol(p.evaluation)), model=p.model,
                     seed=p.seed, evaluation=p.evaluation, adapters=students.adapter_dirs, inputs=students.inputs,
                     outputs=[snakemake.output.answers], protocol=snakemake.config["protocol"])
    backend.close()


if __name__ == "__main__":
    main()
