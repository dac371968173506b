import this_checkout  # noqa: F401, I001 (first: noisekd from this checkout)
from noisekd.pipeline import evaluate_model, run_step, runtime_of, settings_of, student_identity

s = snakemake  # noqa: F821 (injected by Snakemake)
identity = student_identity(settings_of(s), s.wildcards.dataset, s.wildcards.cell, s.input.summary)
run_step(s, evaluate_model, settings=settings_of(s), identity=identity, model_path=s.input.model,
         inputs=dict(s.input.items()), out_path=s.output[0], runtime=runtime_of(s))
