"""End to end: the `ci` preset run locally, and the same through a real SLURM cluster.

The SLURM test needs a reachable cluster (`.ci/slurm/start.sh` starts a single-node one).  Without
one it is skipped locally; under CI=true it must run, so a missing cluster fails it.
"""

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from ci_run import run_ci_preset, stale_copy_first
from test_workflow import ROOT, snakemake

from noisekd.config import load_config
from noisekd.evaluate import read_rows_settings
from noisekd.lineage import settings_hash
from noisekd.plan import Plan

TABLES = ["table1", "table2", "table3", "table4", "table5", "table_s1", "table_s2_s3", "table_s4", "table_related",
          "linear_study"]
FIGURES = ["figure2", "figure3", "figure4", "figure5", "linear_study"]
# The production profile with the CI cluster's needs stacked on it (squeue status checks: the CI cluster
# has no accounting; a 10 s first status check; successful jobs' SLURM logs kept).
SLURM_PROFILES = ("--profile", "slurm", "--profile", ".ci/slurm/profile")


def _counting_squeue(tmp_path: Path) -> tuple[dict, Path]:
    """A PATH entry whose `squeue` logs each call (time and arguments) and runs the real one."""
    real, bin_dir, log = shutil.which("squeue"), tmp_path / "bin", tmp_path / "squeue.log"
    bin_dir.mkdir()
    wrapper = bin_dir / "squeue"
    wrapper.write_text(f'#!/bin/sh\necho "$(date +%s.%N) $*" >> {log}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}, log


def _check_outputs(results: Path):
    for t in TABLES:
        for ext in ("md", "tex", "csv", "html"):
            assert (results / "tables" / f"{t}.{ext}").stat().st_size > 0, f"{t}.{ext}"
    for name in ("scorecard.md", "scorecard.html", "scorecard.csv", "claims.csv"):
        assert (results / "tables" / name).stat().st_size > 0, name
    for f in FIGURES + ["scorecard"]:
        for ext in ("png", "pdf"):
            assert (results / "figures" / f"{f}.{ext}").stat().st_size > 0, f"{f}.{ext}"
    metrics = pd.read_parquet(results / "metrics.parquet")
    assert {"test_acc", "ood_acc", "mca", "robust_acc_worst_of_restarts"} <= set(metrics.metric)
    assert metrics.git_commit.notna().all()
    # Every result file records the settings this config plans for it, and its rows their hash.
    plan = Plan(load_config(ROOT / "config.yaml", ROOT / "presets" / "ci.yaml", results.parent / f"{results.name}.yaml"))
    expected = {path: settings for path, settings, _ in plan.all_result_files()}
    for path, settings in expected.items():
        assert read_rows_settings(path) == json.loads(json.dumps(settings)), path
        assert set(pd.read_parquet(path).settings_hash) == {settings_hash(settings)}, path
    assert set(metrics.settings_hash) == {settings_hash(s) for s in expected.values()}


@pytest.mark.slow
def test_ci_preset_runs_locally_to_every_table_and_figure(local_run):
    _check_outputs(local_run)


@pytest.mark.slow
def test_rerun_is_a_no_op(local_run, tmp_path):
    override = local_run.parent / "local.yaml"
    proc = snakemake("all_tables", "-n", "--cores", "2", "--configfile", "presets/ci.yaml", str(override))
    assert "Nothing to be done" in proc.stdout + proc.stderr


def _slurm_reachable() -> str | None:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "no sbatch/sinfo on PATH (start a cluster with .ci/slurm/start.sh)"
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 or not re.search(r"idle|mixed|allocated", proc.stdout):
        return f"SLURM not reachable: {(proc.stderr or proc.stdout).strip()[:200]}"
    return None


@pytest.mark.reliability
@pytest.mark.slow
@pytest.mark.slurm
def test_ci_preset_through_slurm_matches_the_local_run(local_run, tmp_path):
    reason = _slurm_reachable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    logs_before = set((ROOT / ".snakemake" / "slurm_logs").rglob("*.log"))
    env, squeue_log = _counting_squeue(tmp_path)
    env |= stale_copy_first(tmp_path)
    t0 = time.time()
    results, proc = run_ci_preset(tmp_path, "slurm", *SLURM_PROFILES, "--jobs", "4", timeout=1500, env=env)
    wall = time.time() - t0
    _check_outputs(results)
    # Status checks stay gentle on slurmctld: one squeue per round for all of the run's jobs (by the
    # run's name), rounds at least the CI profile's 10 s apart (backing off while nothing finishes).
    polls = [line.split() for line in squeue_log.read_text().splitlines() if "--states=all" in line]
    assert polls and all("--name" in p for p in polls), polls[:3]
    stamps = sorted(float(p[0]) for p in polls)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    print(f"{len(polls)} squeue status polls in {wall:.0f}s; smallest gap {min(gaps, default=0):.1f}s")
    assert len(polls) <= wall / 10 + 2 and min(gaps, default=10) >= 9.0, (len(polls), wall, gaps[:10])
    output = proc.stdout + proc.stderr
    job_ids = set(re.findall(r"submitted with SLURM jobid (\d+)", output))
    assert len(job_ids) >= 20, output[-3000:]  # every training/evaluation/attack job went through sbatch
    new_logs = set((ROOT / ".snakemake" / "slurm_logs").rglob("*.log")) - logs_before
    assert {p.stem for p in new_logs} & job_ids, "no SLURM job log named by a job id"
    # Training and evaluation are deterministic on CPU: the tables equal the local run's.
    for t in TABLES + ["scorecard", "claims"]:
        for ext in ("md", "csv") if t != "claims" else ("csv",):
            local = (local_run / "tables" / f"{t}.{ext}").read_text()
            assert (results / "tables" / f"{t}.{ext}").read_text() == local, f"{t}.{ext} differs"


@pytest.mark.slow
def test_snakemake_report_bundles_tables_and_figures(local_run, tmp_path):
    override = local_run.parent / "local.yaml"
    out = tmp_path / "report.zip"
    snakemake("all_tables", "--configfile", "presets/ci.yaml", str(override), "--report", str(out))
    import zipfile

    archive = zipfile.ZipFile(out)
    names = archive.namelist()
    assert any(n.endswith("table1.html") for n in names) and any(n.endswith("figure2.png") for n in names)
    assert any(n.endswith("scorecard.html") for n in names) and any(n.endswith("scorecard.png") for n in names)
    # the scorecard comes first: the report's menu sorts categories by name
    index = archive.read(next(n for n in names if n.endswith("report.html"))).decode()
    found = re.findall(r'"(\d\. [A-Z][a-z ]+)":', index)
    assert found and min(found) == "1. Scorecard", found[:10]


@pytest.mark.reliability
@pytest.mark.slow
def test_a_second_run_reproduces_the_same_rows(local_run, tmp_path):
    """Same config and seeds, a fresh results folder: one attacked student's evaluation and attack rows
    (every column, provenance included) equal the first run's, and so do its weights."""
    plan = Plan(load_config("config.yaml", "presets/ci.yaml"))
    dataset, cell, seed = plan.attacked_runs()[0]
    run = f"students/{dataset}/{cell}/seed{seed}"
    again = tmp_path / "again"
    (tmp_path / "again.yaml").write_text(f"results_dir: {again}\n")
    snakemake(f"{again}/{run}/eval.parquet", f"{again}/{run}/attack.parquet", "--cores", "2",
              "--configfile", "presets/ci.yaml", str(tmp_path / "again.yaml"), timeout=900)
    for name in ("eval.parquet", "attack.parquet"):
        first, second = pd.read_parquet(local_run / run / name), pd.read_parquet(again / run / name)
        assert len(first) > 0
        pd.testing.assert_frame_equal(first, second)
    import torch

    a = torch.load(local_run / run / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(again / run / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
