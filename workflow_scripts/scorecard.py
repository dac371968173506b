import this_checkout  # noqa: F401, I001 (first: noisekd from this checkout)
from noisekd.jobs import run_step, scorecard

s = snakemake  # noqa: F821 (injected by Snakemake)
run_step(s, scorecard, metrics=s.input.metrics, published=s.input.published, report=s.params.report,
         match=s.params.match, out=dict(s.output.items()))
