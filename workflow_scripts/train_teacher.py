from noisekd.pipeline import run_step, train_teacher
from noisekd.plan import Plan

s = snakemake  # noqa: F821 (injected by Snakemake)
run_step(s, train_teacher, plan=Plan(s.config), dataset=s.wildcards.dataset, kind=s.wildcards.kind,
         seed=int(s.wildcards.seed), inputs=dict(s.input.items()), out=dict(s.output.items()), threads=s.threads)
