# Hong et al.'s three factors with deep linear networks: one CPU rule, a table and a figure.


rule linear_study:
    output:
        md=L.table("linear_study", "md"),
        tex=L.table("linear_study", "tex"),
        csv=L.table("linear_study", "csv"),
        html=report(
            L.table("linear_study", "html"),
            category="4. Linear study",
            caption="../report/linear_study.rst",
        ),
        png=report(
            L.figure("linear_study", "png"),
            category="4. Linear study",
            caption="../report/linear_study.rst",
        ),
        pdf=L.figure("linear_study", "pdf"),
        results=L.linear_study("results.parquet"),
        curves=L.linear_study("curves.parquet"),
    log:
        L.log("linear_study"),
    localrule: True
    conda:
        ENV
    params:
        settings=PLAN.linear_study_settings(),
    script:
        "../workflow_scripts/linear_study.py"
