"""Where every result of a config lies, defined once: the rules, the plan and the library use this.

All paths lie below the config's `results_dir`.  The rules pass wildcards as placeholders, e.g.
``Layout(R).student("{dataset}", "{cell}", "{seed}", "eval.parquet")``; the plan and the tests pass
values.  Nothing recovers a seed or a cell from a path: whoever needs one is handed it.
"""

from __future__ import annotations

from pathlib import Path

CHECKPOINT = "checkpoint.pt"  # a training run's resumable state, beside its model.pt until that is written


def _rate(rate) -> str:
    return rate if isinstance(rate, str) else f"{float(rate):g}"


class Layout:
    def __init__(self, results_dir: str):
        self.root = str(results_dir).rstrip("/")

    # -- data: <root>/data/<dataset>/ ----------------------------------------------------------------

    def data(self, dataset: str, name: str) -> str:
        """train.npz, val.npz, test.npz, ood.npz, corruptions.npy, corruptions_fetched.json."""
        return f"{self.root}/data/{dataset}/{name}"

    def split(self, dataset: str, split: str) -> str:
        return self.data(dataset, f"{split}.npz")

    def labels(self, dataset: str, rate) -> str:
        """The statically corrupted training labels at `rate` (a number, or a wildcard placeholder)."""
        return self.data(dataset, f"labels_lc{_rate(rate)}.npz")

    # -- teachers: <root>/teachers/<dataset>/<kind>/ -------------------------------------------------

    def teacher(self, dataset: str, kind: str, name: str) -> str:
        """best.json (the selection), eval.parquet (the selected teacher), train_logits.pt."""
        return f"{self.root}/teachers/{dataset}/{kind}/{name}"

    def teacher_run(self, dataset: str, kind: str, seed, name: str) -> str:
        """model.pt, summary.json (and checkpoint.pt while it trains) of one teacher seed."""
        return f"{self.root}/teachers/{dataset}/{kind}/seed{seed}/{name}"

    # -- students: <root>/students/<dataset>/<cell>/seed<s>/ -----------------------------------------

    @staticmethod
    def partial(out: str) -> str:
        """Where a packed job keeps one seed's finished rows until all its seeds are done (not an output)."""
        path = Path(out)
        return str(path.with_name(f"{path.stem}.partial{path.suffix}"))

    def student(self, dataset: str, cell: str, seed, name: str) -> str:
        """model.pt, summary.json, eval.parquet, attack.parquet (and checkpoint.pt while it trains)."""
        return f"{self.root}/students/{dataset}/{cell}/seed{seed}/{name}"

    # -- what is built from the runs -----------------------------------------------------------------

    @property
    def metrics(self) -> str:
        return f"{self.root}/metrics.parquet"

    @property
    def manifest(self) -> str:
        return f"{self.root}/manifest.json"

    def table(self, name: str, ext: str) -> str:
        return f"{self.root}/tables/{name}.{ext}"

    def figure(self, name: str, ext: str) -> str:
        return f"{self.root}/figures/{name}.{ext}"

    def linear_study(self, name: str) -> str:
        """results.parquet, curves.parquet (its table and figure lie with the others)."""
        return f"{self.root}/linear_study/{name}"

    def log(self, rule: str, name: str | None = None) -> str:
        return f"{self.root}/logs/{rule}/{name}.log" if name else f"{self.root}/logs/{rule}.log"

    def benchmark(self, rule: str, name: str) -> str:
        return f"{self.root}/benchmarks/{rule}/{name}.tsv"

    @property
    def compile_cache(self) -> str:
        """torch.compile's kernels, shared by the training jobs of this results folder."""
        return str(Path(self.root).resolve() / ".cache" / "torchinductor")
