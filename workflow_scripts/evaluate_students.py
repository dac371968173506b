import this_checkout  # noqa: F401, I001 (first: noisekd from this checkout)
from noisekd.pipeline import evaluate_students, run_step, runtime_of, settings_of

s = snakemake  # noqa: F821 (injected by Snakemake)
run_step(s, evaluate_students, settings=settings_of(s), seeds=list(s.params.seeds), dataset=s.wildcards.dataset,
         cell=s.wildcards.cell, inputs=dict(s.input.items()), outs=list(s.output), runtime=runtime_of(s))
