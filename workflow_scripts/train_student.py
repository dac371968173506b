from noisekd.pipeline import run_step, train_student
from noisekd.plan import Plan

s = snakemake  # noqa: F821 (injected by Snakemake)
run_step(s, train_student, plan=Plan(s.config), dataset=s.wildcards.dataset, cell_name=s.wildcards.cell,
         seed=int(s.wildcards.seed), inputs=dict(s.input.items()), out=dict(s.output.items()), threads=s.threads)
