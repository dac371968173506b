import this_checkout  # noqa: F401, I001 (first: noisekd from this checkout)
from noisekd.pipeline import run_step, train_students
from noisekd.plan import Plan

s = snakemake  # noqa: F821 (injected by Snakemake)
plan = Plan(s.config)
outs = [{"model": m, "summary": j} for m, j in zip(s.output.models, s.output.summaries)]
run_step(s, train_students, plan=plan, dataset=s.wildcards.dataset, cell_name=s.wildcards.cell,
         seeds=plan.student_seeds, inputs=dict(s.input.items()), outs=outs, threads=s.threads)
