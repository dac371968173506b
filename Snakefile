"""Noise in knowledge distillation: the paper's DAG from dataset download to tables and figures.

snakemake --profile slurm all_tables                        # paper protocol on a SLURM cluster
snakemake --configfile presets/demo.yaml --cores 2 all_tables   # offline demo, minutes on a laptop
snakemake --configfile presets/demo.yaml --cores 2 figure2      # one figure, only what it needs
"""

from snakemake.utils import min_version, validate

# Snakemake puts this folder first on the path, so this checkout's noisekd is imported here; the jobs
# do the same through workflow_scripts/this_checkout.py.
from noisekd.config import check_config
from noisekd.plan import Plan, report_inputs, report_names, reports

min_version("9.0")


configfile: "config.yaml"


# `snakemake --report report.html` (make report): the scorecard first, then tables and figures.
report: "report/workflow.rst"


# First a one-line error naming the offending key, then Snakemake's own check (fills defaults).
check_config(config)
validate(config, "schemas/config.schema.yaml")
PLAN = Plan(config)


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/teachers.smk"
include: "rules/students.smk"
include: "rules/evaluation.smk"
include: "rules/linear_study.smk"
include: "rules/report.smk"


# `snakemake` without a target builds all_tables (Snakemake ignores a default_target set in an
# included file).
rule default:
    default_target: True
    input:
        rules.all_tables.input,
    localrule: True
