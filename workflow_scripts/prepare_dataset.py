import this_checkout  # noqa: F401, I001 (first: noisekd from this checkout)
from noisekd.pipeline import prepare_dataset, run_step, runtime_of, settings_of

s = snakemake  # noqa: F821 (injected by Snakemake)
run_step(s, prepare_dataset, settings=settings_of(s), runtime=runtime_of(s), out=dict(s.output.items()))
