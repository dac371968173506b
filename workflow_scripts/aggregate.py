from noisekd.pipeline import aggregate, run_step

s = snakemake  # noqa: F821 (injected by Snakemake)
run_step(s, aggregate, paths=list(s.input), out_path=s.output[0])
