import this_checkout  # noqa: F401, I001 (first: noisekd from this checkout)
from noisekd.pipeline import run_step, train_teachers
from noisekd.plan import Plan

s = snakemake  # noqa: F821 (injected by Snakemake)
plan = Plan(s.config)
outs = [{"model": m, "summary": j} for m, j in zip(s.output.models, s.output.summaries)]
run_step(s, train_teachers, plan=plan, dataset=s.wildcards.dataset, kind=s.wildcards.kind, seeds=plan.teacher_seeds,
         inputs=dict(s.input.items()), outs=outs, threads=s.threads)
