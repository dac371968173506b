import this_checkout  # noqa: F401, I001 (first: noisekd from this checkout)
from noisekd.pipeline import evaluate_teacher, run_step, runtime_of, settings_of

s = snakemake  # noqa: F821 (injected by Snakemake)
run_step(s, evaluate_teacher, settings=settings_of(s), dataset=s.wildcards.dataset, kind=s.wildcards.kind,
         teacher_seed=s.params.teacher_seed, inputs=dict(s.input.items()), out_path=s.output[0], runtime=runtime_of(s))
