import this_checkout  # noqa: F401, I001 (first: noisekd from this checkout)
from noisekd.pipeline import make_figure, run_step
from noisekd.plan import Plan

s = snakemake  # noqa: F821 (injected by Snakemake)
run_step(s, make_figure, plan=Plan(s.config), name=s.wildcards.name, paths=list(s.input), out=dict(s.output.items()))
