import this_checkout  # noqa: F401, I001 (first: noisekd from this checkout)
from noisekd.pipeline import prepare_dataset, run_step

s = snakemake  # noqa: F821 (injected by Snakemake)
run_step(s, prepare_dataset, dataset_config=s.params.dataset, data_dir=s.params.data_dir,
         selection=s.params.selection, out=dict(s.output.items()))
