# sublim: the subliminal-learning scaling-law experiment, end to end.
# model → generate → filter → train → evaluate → score → report. See README.md.


from snakemake.exceptions import WorkflowError
from sublim.config import ConfigError, check_yaml_syntax

# Snakemake's loader names neither the file nor the line of a YAML error; this names both for the
# file below (files a profile or --configfile gives are loaded before: README, "Troubleshooting")
try:
    check_yaml_syntax("config/config.yaml")
except ConfigError as error:
    raise WorkflowError(str(error)) from None


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
