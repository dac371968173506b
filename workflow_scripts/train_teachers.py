import this_checkout  # noqa: F401, I001 (first: noisekd from this checkout)
from noisekd.pipeline import run_step, runtime_of, settings_of, train_teachers

s = snakemake  # noqa: F821 (injected by Snakemake)
outs = [{"model": m, "summary": j} for m, j in zip(s.output.models, s.output.summaries)]
run_step(s, train_teachers, settings=settings_of(s), seeds=[int(x) for x in s.params.seeds],
         inputs=dict(s.input.items()), outs=outs, runtime=runtime_of(s), name=dict(s.wildcards.items()))
