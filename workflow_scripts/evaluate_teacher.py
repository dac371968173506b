import this_checkout  # noqa: F401, I001 (first: noisekd from this checkout)
from noisekd.pipeline import best_teacher, evaluate_model, run_step, teacher_identity
from noisekd.plan import Plan

s = snakemake  # noqa: F821 (injected by Snakemake)
plan = Plan(s.config)
identity, candidates = teacher_identity(plan, s.wildcards.dataset, s.wildcards.kind, s.input.best)
model, _ = best_teacher(s.input.best, s.input.models)
run_step(s, evaluate_model, plan=plan, identity=identity, model_path=model, inputs=dict(s.input.items()),
         out_path=s.output[0], threads=s.threads, extra_rows=candidates)
