"""Cluster resources of the jobs: SLURM time limits, memory and CPUs from the config's `resources` block.

Pure functions of config values, the epochs a job trains and Snakemake's `attempt` (1 for the first
submission, 2 for the first retry, ...); rules/common.smk turns them into the rules' `resources:`.
No torch: the Snakefile plans the DAG without it.

A training job trains its seeds side by side on one GPU (one after another on a CPU), so its time
limit is

    runtime = (train_overhead_min + epochs x seeds x train_min_per_epoch) x attempt   [minutes]

where `train_min_per_epoch` is the time of one epoch of one seed.  The default, 0.1 min (6 s), is
about twice the slowest job measured on an H100 (benchmarks/records/h100-2026-11-22.jsonl: the
WRN-40-2 teacher trains 27,400 images/s eager, 33,300 compiled, so one SVHN epoch of 73,257 images
takes 2.2-2.7 s; a KD student with its live teacher 44,000-54,400 images/s, 1.3-1.7 s; seeds side
by side share the GPU at 1.3-1.8x the throughput of one, which this leaves as headroom).  Slower
GPUs: raise it (an A100 is roughly 1.5-2x an H100 here).  `train_overhead_min` covers start-up,
torch.compile (~45 s per model), loading the data and the final evaluation.  Every retry multiplies
time and memory by `attempt`, and a retried training resumes from its last checkpoint.
"""

from __future__ import annotations

import math

# What the config's `resources:` block falls back to (config.yaml states the paper's values).
DEFAULTS = {
    "gpu": 1,
    "threads": 8,  # CPUs (sbatch --cpus-per-task) per GPU job: the side-by-side seeds' threads + compile workers
    "train_min_per_epoch": 0.1,  # minutes per epoch and seed (see the module docstring)
    "train_overhead_min": 15,
    "train_mem_mb": 16000,
    "eval_runtime_min": 120,
    "attack_runtime_min": 360,
    "data_runtime_min": 120,
    "data_mem_mb": 16000,
}


def setting(resources: dict, key: str):
    """A `resources` config value, or its default."""
    value = resources.get(key)
    return DEFAULTS[key] if value is None else value


def grow(value: float, attempt: int) -> int:
    """A first attempt's time or memory, scaled for `attempt` (x1, x2, x3, ...), in whole units."""
    return int(math.ceil(value * max(1, int(attempt))))


def train_runtime_min(resources: dict, epochs: int, seeds: int, attempt: int = 1) -> int:
    """Time limit (minutes) of a job training `seeds` seeds for `epochs` epochs each."""
    per_attempt = setting(resources, "train_overhead_min") + epochs * seeds * setting(resources, "train_min_per_epoch")
    return grow(per_attempt, attempt)


def per_attempt(resources: dict, key: str, attempt: int = 1) -> int:
    """A fixed `resources` value (train_mem_mb: memory of every GPU job; eval_runtime_min: evaluation
    and teacher-logits jobs; attack_runtime_min; data_runtime_min and data_mem_mb: data preparation,
    the CIFAR-10-C stack being 2.9 GB of uint8), scaled for `attempt`."""
    return grow(setting(resources, key), attempt)
