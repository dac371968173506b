import this_checkout  # noqa: F401, I001 (first: noisekd from this checkout)
from noisekd.jobs import make_report, run_step

s = snakemake  # noqa: F821 (injected by Snakemake)
run_step(s, make_report, name=s.wildcards.name, report=s.params.report, expected=s.params.expected,
         by=s.config["teacher_selection"]["by"], runs=list(s.input.runs), out=dict(s.output.items()))
