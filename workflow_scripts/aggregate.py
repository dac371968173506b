import this_checkout  # noqa: F401, I001 (first: noisekd from this checkout)
from noisekd.pipeline import aggregate, run_step

s = snakemake  # noqa: F821 (injected by Snakemake)
run_step(s, aggregate, runs=list(s.input.runs), expected=s.params.expected, by=s.config["teacher_selection"]["by"],
         out_path=s.output.metrics, manifest_path=s.output.manifest)
