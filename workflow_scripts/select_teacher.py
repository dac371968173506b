import this_checkout  # noqa: F401, I001 (first: noisekd from this checkout)
from noisekd.jobs import run_step, select_teacher

s = snakemake  # noqa: F821 (injected by Snakemake)
run_step(s, select_teacher, summaries=list(s.input), out_path=s.output[0])
