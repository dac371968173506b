# Aggregation, tables and figures.  Each table and figure reads only the run files it needs, so
# `snakemake figure2` builds nothing else; `all_tables` / `all_figures` build them all.

TABLES = report_names(PLAN, "table")
FIGURES = report_names(PLAN, "figure")


rule aggregate:
    input:
        run_outputs(),
    output:
        metrics=f"{R}/metrics.parquet",
        manifest=f"{R}/manifest.json",
    log:
        f"{R}/logs/aggregate.log",
    localrule: True
    conda:
        ENV
    script:
        "../workflow_scripts/aggregate.py"


rule table:
    input:
        lambda wc: report_inputs(PLAN, wc.name),
    output:
        md=report(
            f"{R}/tables/{{name}}.md", category="Tables", caption="../report/table.rst"
        ),
        tex=f"{R}/tables/{{name}}.tex",
        csv=f"{R}/tables/{{name}}.csv",
    log:
        f"{R}/logs/table/{{name}}.log",
    wildcard_constraints:
        name="|".join(TABLES) or "no_tables",
    localrule: True
    conda:
        ENV
    script:
        "../workflow_scripts/make_table.py"


rule figure:
    input:
        lambda wc: report_inputs(PLAN, wc.name),
    output:
        png=report(
            f"{R}/figures/{{name}}.png",
            category="Figures",
            caption="../report/figure.rst",
        ),
        pdf=f"{R}/figures/{{name}}.pdf",
    log:
        f"{R}/logs/figure/{{name}}.log",
    wildcard_constraints:
        name="|".join(FIGURES) or "no_figures",
    localrule: True
    conda:
        ENV
    script:
        "../workflow_scripts/make_figure.py"


rule all_figures:
    input:
        expand(f"{R}/figures/{{name}}.png", name=FIGURES),
        rules.linear_study.output.png if "linear_study" in config else [],


rule all_tables:
    # The main target: every table and figure of the config, plus the aggregated metrics.
    default_target: True
    input:
        expand(f"{R}/tables/{{name}}.md", name=TABLES),
        rules.all_figures.input,
        f"{R}/metrics.parquet",
        rules.linear_study.output.md if "linear_study" in config else [],


for _name in TABLES:

    rule:
        name:
            _name
        input:
            f"{R}/tables/{_name}.md",
        localrule: True


for _name in FIGURES:

    rule:
        name:
            _name
        input:
            f"{R}/figures/{_name}.png",
        localrule: True


# Tables and figures this config does not run: asking for one says which config key it needs.
for _name in sorted(set(REPORTS) - set(TABLES) - set(FIGURES)):

    rule:
        name:
            _name
        input:
            lambda wc, name=_name: report_inputs(PLAN, name),
        localrule: True
