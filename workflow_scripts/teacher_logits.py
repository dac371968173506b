import this_checkout  # noqa: F401, I001 (first: noisekd from this checkout)
from noisekd.pipeline import compute_teacher_logits, run_step
from noisekd.plan import Plan

s = snakemake  # noqa: F821 (injected by Snakemake)
run_step(s, compute_teacher_logits, plan=Plan(s.config), dataset=s.wildcards.dataset, kind=s.wildcards.kind,
         inputs=dict(s.input.items()), out_path=s.output[0], threads=s.threads)
