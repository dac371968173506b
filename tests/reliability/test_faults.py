"""Fault injection: killed and preempted training processes resume to bit-identical results."""

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

JOB = Path(__file__).with_name("train_job.py")
pytestmark = [pytest.mark.slow, pytest.mark.reliability]


def _start(tmp_path, *extra):
    return subprocess.Popen([sys.executable, str(JOB), str(tmp_path / "ckpt.pt"), str(tmp_path / "final.pt"), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(tmp_path, *extra):
    proc = _start(tmp_path, *extra)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return torch.load(tmp_path / "final.pt", weights_only=True), out


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    state, _ = _finish(tmp_path_factory.mktemp("reference"))
    return state


def _wait_for_line(proc, prefix, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no line starting with {prefix!r}")


@pytest.mark.parametrize("epoch_line", ["epoch    2/", "epoch    4/"])
def test_sigkill_mid_run_then_rerun_is_bit_identical(tmp_path, reference, epoch_line):
    proc = _start(tmp_path)
    _wait_for_line(proc, epoch_line)
    time.sleep(0.05)  # somewhere inside the next epoch
    proc.kill()
    proc.wait()
    assert (tmp_path / "ckpt.pt").exists() and not (tmp_path / "final.pt").exists()
    state, out = _finish(tmp_path)
    assert "resumed from" in out
    assert _equal(state, reference)


@pytest.mark.parametrize("kill_at", [1, 3])
def test_sigkill_between_writing_a_checkpoint_and_renaming_it(tmp_path, reference, kill_at):
    proc = _start(tmp_path, "--kill-at-replace", str(kill_at))
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, out
    leftovers = list(tmp_path.glob(".ckpt.pt.*.tmp"))
    assert leftovers, "the fully written temporary checkpoint should be there, not renamed"
    state, out = _finish(tmp_path)
    assert _equal(state, reference)
    assert not list(tmp_path.glob(".ckpt.pt.*.tmp"))  # the rerun cleaned the stale temporary file
    if kill_at > 1:
        assert "resumed from" in out  # the checkpoint before the killed rename was used


def test_sigterm_saves_a_checkpoint_exits_non_zero_and_resumes(tmp_path, reference):
    proc = _start(tmp_path, "--epochs", "6")
    _wait_for_line(proc, "epoch    1/")
    proc.send_signal(signal.SIGTERM)  # what SLURM sends at a time limit or preemption
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3 and "interrupted" in out, out
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["epoch"] >= 1
    state, out = _finish(tmp_path)
    assert "resumed from" in out and _equal(state, reference)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_outputs_get_the_mode_of_a_plain_open(tmp_path, umask):
    # mkstemp's temporary files are 0600; results shared with a group must come out as open() makes them.
    from noisekd.io import write_bytes_atomic

    old = os.umask(umask)
    try:
        write_bytes_atomic(tmp_path / "result.bin", b"x")
        (tmp_path / "plain.bin").write_bytes(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "result.bin").stat().st_mode) == stat.S_IMODE((tmp_path / "plain.bin").stat().st_mode)
    assert stat.S_IMODE((tmp_path / "result.bin").stat().st_mode) == 0o666 & ~umask
