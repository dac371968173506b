"""Workflow-level faults: a killed workflow resumes with --rerun-incomplete, and a second
invocation on the same folder is refused by Snakemake's lock."""

import os
import re
import signal
import subprocess
import time

import pytest
import torch
from test_workflow import ROOT, SNAKEMAKE, snakemake

pytestmark = [pytest.mark.slow, pytest.mark.reliability]
TARGET = "table_s2_s3"  # Messy Collaboration: teachers on corrupted labels, students, evaluation


def _override(tmp_path):
    path = tmp_path / "override.yaml"
    path.write_text(f"results_dir: {tmp_path / 'results'}\n")
    return path


def _start(tmp_path, *extra):
    """Start the workflow in the background; its log goes to tmp_path/snakemake.out."""
    with open(tmp_path / "snakemake.out", "w") as out:
        return subprocess.Popen([SNAKEMAKE, TARGET, "--cores", "2", *extra, "--configfile", "presets/ci.yaml",
                                 str(_override(tmp_path))], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def _wait_for(predicate, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_killed_workflow_finishes_with_rerun_incomplete_retraining_only_what_was_lost(tmp_path):
    results = tmp_path / "results"
    proc = _start(tmp_path)
    teachers = lambda: list((results / "teachers").rglob("model.pt"))  # noqa: E731

    def recorded_teacher_jobs():  # Snakemake logs "Finished" once it has recorded the job's outputs
        return (tmp_path / "snakemake.out").read_text().count("(Rule: train_teachers)")

    def a_job_midway():  # one seed of a teacher job finished, another not yet
        return any(0 < sum(s.joinpath("model.pt").exists() for s in seeds) < len(seeds)
                   for seeds in (list(kind.glob("seed*")) for kind in (results / "teachers").glob("*/*")))

    # Kill once one teacher job is recorded, preferably while another is midway (ci: 2 jobs).
    _wait_for(lambda: recorded_teacher_jobs() >= 2 or (recorded_teacher_jobs() == 1 and a_job_midway()))
    os.killpg(proc.pid, signal.SIGKILL)  # the whole workflow, jobs included, as a node failure would
    proc.wait()
    snakemake("--unlock", TARGET, "--configfile", "presets/ci.yaml", str(_override(tmp_path)))
    # A job killed after writing its outputs but before Snakemake recorded it is incomplete and
    # reruns; every other finished teacher must survive untouched.  A job trains several seeds,
    # so its output line lists several models.
    plan = snakemake(TARGET, "-n", "--cores", "2", "--rerun-incomplete", "--configfile", "presets/ci.yaml",
                     str(_override(tmp_path)))
    rerun = {path for line in re.findall(r"output: (.+)", plan.stdout + plan.stderr)
             for path in re.findall(r"[^\s,]+/model\.pt", line)}
    survivors = {p: p.stat().st_mtime_ns for p in teachers() if str(p) not in rerun}
    # A seed that had finished inside a job that reruns resumes from its final checkpoint, so its
    # weights come back identical.
    redone = {p: _weights(p) for p in teachers() if str(p) in rerun}
    assert survivors, "no finished teacher survived the kill"
    done = snakemake(TARGET, "--cores", "2", "--rerun-incomplete", "--configfile", "presets/ci.yaml",
                     str(_override(tmp_path)), timeout=900)
    assert (results / "tables" / f"{TARGET}.md").exists(), done.stdout[-2000:]
    for path, mtime in survivors.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was retrained although it was complete"
    for path, weights in redone.items():
        again = _weights(path)
        assert weights.keys() == again.keys() and all(torch.equal(weights[k], again[k]) for k in weights), \
            f"{path} changed when its job reran"
    assert not list(results.rglob(".*.tmp")), "a temporary file survived"


def test_a_second_invocation_on_the_same_folder_is_refused(tmp_path):
    first = _start(tmp_path)
    try:
        _wait_for(lambda: (tmp_path / "results" / "data" / "digits" / "test.npz").exists())
        second = snakemake(TARGET, "--cores", "1", "--configfile", "presets/ci.yaml", str(_override(tmp_path)),
                           check=False)
        assert second.returncode != 0
        assert "cannot be locked" in second.stdout + second.stderr, second.stdout + second.stderr
    finally:
        os.killpg(first.pid, signal.SIGTERM)
        first.wait(timeout=300)
        snakemake("--unlock", TARGET, "--configfile", "presets/ci.yaml", str(_override(tmp_path)))
