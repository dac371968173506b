# Seed 003's three factors with deep linear networks: one CPU rule, a table and a figure.


rule linear_study:
    output:
        md=report(
            f"{R}/tables/linear_study.md",
            category="Tables",
            caption="../report/linear_study.rst",
        ),
        tex=f"{R}/tables/linear_study.tex",
        csv=f"{R}/tables/linear_study.csv",
        png=report(
            f"{R}/figures/linear_study.png",
            category="Figures",
            caption="../report/linear_study.rst",
        ),
        pdf=f"{R}/figures/linear_study.pdf",
        results=f"{R}/linear_study/results.parquet",
        curves=f"{R}/linear_study/curves.parquet",
    log:
        f"{R}/logs/linear_study.log",
    localrule: True
    conda:
        ENV
    params:
        study=config.get("linear_study", {}),
    script:
        "../workflow_scripts/linear_study.py"
