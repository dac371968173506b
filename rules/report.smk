# Aggregation, tables and figures.  Each table and figure reads only the run files it needs, so
# `snakemake figure2` builds nothing else; `all_tables` / `all_figures` build them all.  Each checks
# that every file it reads was computed with the settings this config expects (noisekd.lineage).

TABLES = report_names(PLAN, "table")
FIGURES = report_names(PLAN, "figure")
RESULT_FILES = PLAN.all_result_files()


rule aggregate:
    input:
        **checked_inputs(RESULT_FILES),
    output:
        metrics=L.metrics,
        manifest=L.manifest,
    log:
        L.log("aggregate"),
    localrule: True
    conda:
        ENV
    params:
        expected=PLAN.expected(RESULT_FILES),
    script:
        "../workflow_scripts/aggregate.py"


rule table:
    input:
        unpack(table_inputs),
    output:
        md=L.table("{name}", "md"),
        tex=L.table("{name}", "tex"),
        csv=L.table("{name}", "csv"),
        html=report(
            L.table("{name}", "html"),
            category="2. Tables",
            caption="../report/table.rst",
        ),
    log:
        L.log("table", "{name}"),
    wildcard_constraints:
        name="|".join(TABLES) or "no_tables",
    localrule: True
    conda:
        ENV
    params:
        report=table_context,
        expected=table_expected,
    script:
        "../workflow_scripts/make_report.py"


rule figure:
    input:
        unpack(table_inputs),
    output:
        png=report(
            L.figure("{name}", "png"),
            category="3. Figures",
            caption="../report/figure.rst",
        ),
        pdf=L.figure("{name}", "pdf"),
    log:
        L.log("figure", "{name}"),
    wildcard_constraints:
        name="|".join(FIGURES) or "no_figures",
    localrule: True
    conda:
        ENV
    params:
        report=table_context,
        expected=table_expected,
    script:
        "../workflow_scripts/make_report.py"


rule scorecard:
    # The paper's published values (report/published/paper.csv) and claims beside this run's.
    input:
        metrics=L.metrics,
        published=PUBLISHED,
    output:
        html=report(
            L.table("scorecard", "html"),
            category="1. Scorecard",
            caption="../report/scorecard.rst",
        ),
        md=L.table("scorecard", "md"),
        csv=L.table("scorecard", "csv"),
        claims=L.table("claims", "csv"),
        png=report(
            L.figure("scorecard", "png"),
            category="1. Scorecard",
            caption="../report/scorecard_figure.rst",
        ),
        pdf=L.figure("scorecard", "pdf"),
    log:
        L.log("scorecard"),
    localrule: True
    conda:
        ENV
    params:
        report=scorecard_context(PLAN).to_params(),
        match={
            "std": config["scorecard"]["match_std"],
            "points": config["scorecard"]["match_points"],
        },
    script:
        "../workflow_scripts/scorecard.py"


rule all_figures:
    input:
        expand(L.figure("{name}", "png"), name=FIGURES),
        rules.linear_study.output.png if "linear_study" in config else [],


rule all_tables:
    # The main target: every table and figure of the config (each file of each, so a rendering added
    # later is built too), the scorecard, and the aggregated metrics.
    default_target: True
    input:
        expand(L.table("{name}", "{ext}"), name=TABLES, ext=("md", "html")),
        rules.all_figures.input,
        L.metrics,
        rules.scorecard.output,
        rules.linear_study.output if "linear_study" in config else [],


for _name in TABLES:

    rule:
        name:
            _name
        input:
            L.table(_name, "md"),
        localrule: True


for _name in FIGURES:

    rule:
        name:
            _name
        input:
            L.figure(_name, "png"),
        localrule: True


# Tables and figures this config does not run: asking for one says which config key it needs.
for _name in sorted(set(reports()) - set(TABLES) - set(FIGURES)):

    rule:
        name:
            _name
        input:
            lambda wc, name=_name: report_inputs(PLAN, name),
        localrule: True
