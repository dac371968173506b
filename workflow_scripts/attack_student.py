import this_checkout  # noqa: F401, I001 (first: noisekd from this checkout)
from noisekd.pipeline import attack_model, run_step
from noisekd.plan import Plan

s = snakemake  # noqa: F821 (injected by Snakemake)
run_step(s, attack_model, plan=Plan(s.config), dataset=s.wildcards.dataset, cell_name=s.wildcards.cell,
         seed=int(s.wildcards.seed), model_path=s.input.model, summary_path=s.input.summary,
         test_path=s.input.test, out_path=s.output[0], threads=s.threads)
