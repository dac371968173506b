import this_checkout  # noqa: F401, I001 (first: noisekd from this checkout)
from noisekd.pipeline import prepare_corruptions, run_step

s = snakemake  # noqa: F821 (injected by Snakemake)
run_step(s, prepare_corruptions, dataset_config=s.params.dataset, data_dir=s.params.data_dir,
         test_path=s.input.test, out_path=s.output[0])
