import this_checkout  # noqa: F401, I001 (first: noisekd from this checkout)
from noisekd.pipeline import fetch_corruptions, run_step, runtime_of

s = snakemake  # noqa: F821 (injected by Snakemake)
run_step(s, fetch_corruptions, runtime=runtime_of(s), out_path=s.output[0])
