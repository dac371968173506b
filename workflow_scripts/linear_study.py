import this_checkout  # noqa: F401, I001 (first: noisekd from this checkout)
from noisekd.pipeline import linear_study, run_step

s = snakemake  # noqa: F821 (injected by Snakemake)
run_step(s, linear_study, settings=dict(s.params.settings), out=dict(s.output.items()))
