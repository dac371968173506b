"""The workflow's job plumbing and its torch-free steps.

`run_step` runs every Snakemake `script:` job (logging, one-line errors).  Selection, tables,
figures and the scorecard only read result files, so they live here, away from torch: a job that
imports `noisekd.pipeline` pays ~2 s for torch before it starts, one of these does not.
"""

from __future__ import annotations

import ctypes
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from . import lineage, selection
from .errors import NoiseKDError
from .io import write_json_atomic
from .lineage import read_rows_settings
from .settings import Runtime

log = logging.getLogger("noisekd")


def select_teacher(summaries: list[str], out_path: str) -> None:
    """The seed every selection rule picks (best test accuracy, as the paper; best validation accuracy
    where a split is held out), from the teachers' summaries alone."""
    candidates = []
    for path in summaries:
        s = json.loads(Path(path).read_text())
        if "test_acc" not in s:
            raise NoiseKDError(f"teacher summary {path} has no test_acc")
        candidates.append({"seed": s["run"]["seed"], "test_acc": s["test_acc"], "val_acc": s.get("val_acc")})
    chosen = selection.select(candidates)
    write_json_atomic(out_path, chosen)
    for rule, best in chosen["selected"].items():
        log.info(f"by {rule} accuracy: seed {best['seed']} ({best['accuracy']:.4f}) of {len(candidates)} seeds")


def check_results(runs: list[str], expected: dict, by: str) -> None:
    """Refuse result files that were not computed with the settings `expected` names for them (see
    `noisekd.lineage`), and rows whose teacher seed is not the one their selection file names by rule
    `by` (teacher_selection.by: like the device, read from the config and not a param, since it changes
    no number of a table whose students' teacher seeds stay the same)."""
    import pandas as pd

    wanted, selections = lineage.unpack(expected), expected["selections"]
    seeds = {path: selection.selected_seed(path, by) for path in set(selections.values())}
    for path in runs:
        if path not in wanted:
            raise NoiseKDError(f"{path} is not a result file of this config")
        lineage.check(path, read_rows_settings(path), wanted[path])
        if path in selections:
            frame = pd.read_parquet(path, columns=["role", "teacher_seed"])
            found = set(frame.loc[frame.role.isin(["student", "teacher"]), "teacher_seed"].dropna().astype(int))
            seed = seeds[selections[path]]
            if found != {seed}:
                raise NoiseKDError(f"{path} was computed from teacher seed {sorted(found)}, but "
                                   f"{selections[path]} now selects seed {seed} by {by} accuracy; rebuild it: "
                                   f"snakemake --forcerun {path}")


def _read_rows(paths: list[str]):
    import pandas as pd

    if not paths:
        raise NoiseKDError("no result files to read")
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def make_report(name: str, report: dict, expected: dict, by: str, runs: list[str], out: dict) -> None:
    """One registered table (md, tex, csv) or figure (png, pdf), from result files checked first."""
    from .plan import ReportContext, reports
    from .tables import write_figure, write_table

    check_results(runs, expected, by)
    registered = reports()[name]
    built = registered.build(_read_rows(runs), ReportContext.from_params(report))
    if registered.kind == "table":
        write_table(built, out["md"], out["tex"], out["csv"], out["html"])
    else:
        write_figure(built, out["png"], out["pdf"])
    log.info(f"{name} written from {len(runs)} result files")


def scorecard(metrics: str, published: str, report: dict, match: dict, out: dict) -> None:
    """The paper's published values and claims beside this run's (noisekd.scorecard), from the aggregated
    rows; every claim's verdict is logged with its numbers."""
    import pandas as pd

    from .plan import ReportContext
    from .scorecard import write_scorecard

    claims = write_scorecard(pd.read_parquet(metrics), ReportContext.from_params(report), published,
                             match["std"], match["points"], out)
    for r in claims:
        numbers = "; ".join(c.text for c in r.comparisons) or r.why
        log.info(f"claim {r.claim.name} on {r.dataset}: {r.verdict} ({r.held} hold): {numbers}")


# ---------------------------------------------------------------------------------------------
# Script plumbing


def keep_freed_memory(threshold: int = 1 << 30) -> bool:
    """Let glibc's malloc keep freed blocks below `threshold` bytes for reuse instead of unmapping them.

    PyTorch on a CPU allocates and frees a step's activations every step; above glibc's mmap
    threshold each is a fresh mmap whose pages fault in again.  A 50-step PGD attack of the demo's
    student took 14.6 s (2.7 s in the kernel), 11.7 s (0.3 s) with this (benchmarks/cpu_inference.py,
    docs/performance.md).  The process
    keeps up to its peak heap.  A no-op (False) where libc is not glibc."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
    return bool(mallopt(M_MMAP_THRESHOLD, threshold)) and bool(mallopt(M_TRIM_THRESHOLD, threshold))


def settings_of(snakemake) -> dict:
    """A Snakemake job's settings: its rule params, one per settings block (noisekd.plan.SETTINGS_BLOCKS)."""
    from .plan import SETTINGS_BLOCKS

    return {block: snakemake.params[block] for block in SETTINGS_BLOCKS[snakemake.rule]}


def runtime_of(snakemake) -> Runtime:
    """Where and how fast a Snakemake job runs: the config's device, speed and location keys, which
    are deliberately not its settings (changing them reruns nothing)."""
    return Runtime.from_config(snakemake.config, snakemake.threads)


def run_step(snakemake, step: Callable[..., None], **kwargs) -> None:
    """Run one step inside a Snakemake `script:` with logging to the rule's log file and stderr.

    A NoiseKDError (bad input, bad config, interrupted training) ends the job with its one-line
    message and exit status 1; anything else keeps its traceback in the log.
    """
    handlers = [logging.StreamHandler(sys.stderr)]
    if snakemake.log:
        Path(snakemake.log[0]).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(snakemake.log[0], mode="a"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(message)s")
    log.info(f"rule {snakemake.rule} {dict(snakemake.wildcards)}")
    try:
        gpus = int(getattr(snakemake.resources, "gpu", 0) or 0)
        if gpus:  # only GPU jobs import torch to look for one
            from .execution import check_gpu_job

            check_gpu_job(gpus, snakemake.config.get("device", "auto"))
        keep_freed_memory()
        step(**kwargs)
    except NoiseKDError as exc:
        log.error(f"error: {exc}")
        sys.exit(1)
    except Exception:
        log.exception("unexpected error")
        raise
