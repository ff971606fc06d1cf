# sublim: the subliminal-learning scaling-law experiment, end to end.
# model → generate → filter → train → evaluate → score → report. See README.md.


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/filter.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/score.smk"
include: "workflow/rules/reference.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/p_animal.smk"
include: "workflow/rules/publish.smk"


onsuccess:
    stop_mps_if_started()


onerror:
    stop_mps_if_started()


rule all:
    default_target: True
    input:
        all_targets(),
