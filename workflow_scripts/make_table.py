import this_checkout  # noqa: F401, I001 (first: noisekd from this checkout)
from noisekd.pipeline import make_table, run_step
from noisekd.plan import Plan

s = snakemake  # noqa: F821 (injected by Snakemake)
run_step(s, make_table, plan=Plan(s.config), name=s.wildcards.name, paths=list(s.input), out=dict(s.output.items()))
