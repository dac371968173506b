"""Workflow-level faults: a killed workflow resumes with --rerun-incomplete, and a second
invocation on the same folder is refused by Snakemake's lock."""

import os
import re
import signal
import subprocess
import time

import pytest

from test_workflow import ROOT, SNAKEMAKE, snakemake

pytestmark = [pytest.mark.slow, pytest.mark.reliability]
TARGET = "table_s2_s3"  # Messy Collaboration: teachers on corrupted labels, students, evaluation


def _override(tmp_path):
    path = tmp_path / "override.yaml"
    path.write_text(f"results_dir: {tmp_path / 'results'}\n")
    return path


def _start(tmp_path, *extra):
    return subprocess.Popen([SNAKEMAKE, TARGET, "--cores", "2", *extra, "--configfile", "presets/ci.yaml",
                             str(_override(tmp_path))], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


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
    _wait_for(lambda: len(teachers()) >= 3)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole workflow, jobs included, as a node failure would
    proc.wait()
    snakemake("--unlock", TARGET, "--configfile", "presets/ci.yaml", str(_override(tmp_path)))
    # A job killed after writing its outputs but before Snakemake recorded it is incomplete and
    # reruns; every other finished teacher must survive untouched.
    plan = snakemake(TARGET, "-n", "--cores", "2", "--rerun-incomplete", "--configfile", "presets/ci.yaml",
                     str(_override(tmp_path)))
    rerun = set(re.findall(r"output: (\S+/model\.pt)", plan.stdout + plan.stderr))
    survivors = {p: p.stat().st_mtime_ns for p in teachers() if str(p) not in rerun}
    assert survivors, "no finished teacher survived the kill"
    done = snakemake(TARGET, "--cores", "2", "--rerun-incomplete", "--configfile", "presets/ci.yaml",
                     str(_override(tmp_path)), timeout=900)
    assert (results / "tables" / f"{TARGET}.md").exists(), done.stdout[-2000:]
    for path, mtime in survivors.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was retrained although it was complete"
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
