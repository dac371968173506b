import this_checkout  # noqa: F401, I001 (first: noisekd from this checkout)
from noisekd.pipeline import corrupt_training_labels, run_step, settings_of

s = snakemake  # noqa: F821 (injected by Snakemake)
run_step(s, corrupt_training_labels, settings=settings_of(s), train_path=s.input.train, out_path=s.output[0])
