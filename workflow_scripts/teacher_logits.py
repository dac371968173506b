import this_checkout  # noqa: F401, I001 (first: noisekd from this checkout)
from noisekd.pipeline import compute_teacher_logits, run_step, runtime_of, settings_of

s = snakemake  # noqa: F821 (injected by Snakemake)
run_step(s, compute_teacher_logits, settings=settings_of(s), teacher_seed=s.params.teacher_seed,
         inputs=dict(s.input.items()), out_path=s.output[0], runtime=runtime_of(s))
