import this_checkout  # noqa: F401, I001 (first: noisekd from this checkout)
from noisekd.pipeline import evaluate_model, run_step, student_identity
from noisekd.plan import Plan

s = snakemake  # noqa: F821 (injected by Snakemake)
plan = Plan(s.config)
identity = student_identity(plan, s.wildcards.dataset, s.wildcards.cell, int(s.wildcards.seed), s.input.summary)
run_step(s, evaluate_model, plan=plan, identity=identity, model_path=s.input.model, inputs=dict(s.input.items()),
         out_path=s.output[0], threads=s.threads)
