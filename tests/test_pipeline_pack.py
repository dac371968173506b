"""One training job per teacher kind / student cell: its seeds are trained together (side by side on a
GPU, one after another on a CPU).  A seed's result must not depend on the others it was trained with,
and a job stopped by SIGTERM must resume every seed on its retry."""

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from test_workflow import ROOT

import noisekd.data
from noisekd import selection
from noisekd.config import load_config
from noisekd.errors import NoiseKDError
from noisekd.pipeline import (
    compute_teacher_logits,
    prepare_dataset,
    select_teacher,
    share_compile_cache,
    train_students,
    train_teachers,
)
from noisekd.plan import Plan
from noisekd.settings import Runtime

RUNTIME = Runtime(threads=1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pack")
    config = load_config(ROOT / "config.yaml", ROOT / "presets" / "ci.yaml")
    config["results_dir"] = str(tmp / "results")
    plan = Plan(config)
    data = {split: str(tmp / f"{split}.npz") for split in ("train", "val", "test")}
    prepare_dataset(plan.settings("prepare_dataset", dataset="digits"), RUNTIME, data)
    return plan, data


def _teachers(plan, data, root, seeds=(0, 1)):
    """Train the plain teachers of `seeds` and select one: (outputs, selection file, selected seed)."""
    teachers = _outs(root / "teachers", list(seeds))
    train_teachers(plan.teacher_settings("digits", "plain"), list(seeds), data, teachers, RUNTIME)
    best = root / "best.json"
    select_teacher([t["summary"] for t in teachers], str(best))
    return teachers, best, selection.selected_seed(best, "test")


def _outs(root, seeds):
    return [{"model": str(root / f"seed{s}" / "model.pt"), "summary": str(root / f"seed{s}" / "summary.json")}
            for s in seeds]


def _state(out):
    return torch.load(out["model"], weights_only=True)["state_dict"]


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _history(out):
    return [{k: v for k, v in h.items() if k != "images_per_s"} for h in json.load(open(out["summary"]))["history"]]


def test_a_seed_trained_with_others_equals_the_seed_trained_alone(setup, tmp_path):
    plan, data = setup
    together, alone = _outs(tmp_path / "together", [0, 1]), _outs(tmp_path / "alone", [1])
    settings = plan.teacher_settings("digits", "plain")
    train_teachers(settings, [0, 1], data, together, RUNTIME)
    train_teachers(settings, [1], data, alone, RUNTIME)
    assert _same(_state(together[1]), _state(alone[0]))
    assert _history(together[1]) == _history(alone[0])
    assert not _same(_state(together[0]), _state(together[1]))  # the seeds differ
    assert not list(tmp_path.rglob("checkpoint.pt")), "final models supersede their checkpoints"


@pytest.mark.reliability
def test_sigterm_stops_the_job_and_its_retry_resumes_every_seed(setup, tmp_path, monkeypatch):
    plan, data = setup
    teachers, _, seed = _teachers(plan, data, tmp_path)
    inputs = {"train": data["train"], "teacher": teachers[seed]["model"]}
    # A student cell that runs its teacher live (a logits table would stand in for a Hinton teacher).
    settings = plan.student_settings("digits", "at")
    reference = _outs(tmp_path / "reference", [0, 1])
    train_students(settings, [0, 1], inputs, reference, RUNTIME, teacher_seed=seed)

    original, calls = noisekd.data.DeviceSampler.gather, {"n": 0}

    def batch_then_sigterm(self, idx):
        calls["n"] += 1
        if calls["n"] == 2:
            signal.raise_signal(signal.SIGTERM)  # SLURM's time limit, during the first seed's first epoch
        return original(self, idx)

    resumed = _outs(tmp_path / "resumed", [0, 1])
    monkeypatch.setattr(noisekd.data.DeviceSampler, "gather", batch_then_sigterm)
    with pytest.raises(NoiseKDError, match="interrupted by signal"):
        train_students(settings, [0, 1], inputs, resumed, RUNTIME, teacher_seed=seed)
    monkeypatch.setattr(noisekd.data.DeviceSampler, "gather", original)
    assert (tmp_path / "resumed" / "seed0" / "checkpoint.pt").exists()
    assert not (tmp_path / "resumed" / "seed1" / "model.pt").exists()  # stopped before the second seed
    train_students(settings, [0, 1], inputs, resumed, RUNTIME, teacher_seed=seed)
    for a, b in zip(reference, resumed):
        assert _same(_state(a), _state(b))


def test_students_of_a_logits_table_train_like_students_of_the_live_teacher(setup, tmp_path):
    """The teacher_logits rule's step, then a Hinton cell from its table: the same draws and, on this
    fp32 machine path, the same steps up to rounding; a teacher of another seed or of other settings is
    refused."""
    plan, data = setup
    # fp32: in bf16 the table's batches of 1000 and the live step's of 64 round differently.
    plan = Plan({**plan.config, "train": {**plan.config["train"], "precision": "fp32"}})
    teachers, best, seed = _teachers(plan, data, tmp_path)
    model = teachers[seed]["model"]
    table = tmp_path / "train_logits.pt"
    compute_teacher_logits(plan.teacher_settings("digits", "plain"), seed,
                           {"model": model, "train": data["train"]}, str(table), RUNTIME)
    settings = plan.student_settings("digits", "hinton")
    live, cached = _outs(tmp_path / "live", [0]), _outs(tmp_path / "cached", [0])
    train_students(settings, [0], {"train": data["train"], "teacher": model}, live,
                   RUNTIME, teacher_seed=seed)
    train_students(settings, [0], {"train": data["train"], "teacher_logits": str(table)}, cached, RUNTIME)
    for a, b in zip(_history(live[0]), _history(cached[0])):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)
    summary = json.load(open(cached[0]["summary"]))
    assert summary["teacher_logits"] == "cached" and summary["teacher_seed"] == seed
    assert summary["settings"] == {**settings, "seed": 0}

    with pytest.raises(NoiseKDError, match=f"is of seed {seed}, the selection names seed {1 - seed}"):
        compute_teacher_logits(plan.teacher_settings("digits", "plain"), 1 - seed,
                               {"model": model, "train": data["train"]}, str(tmp_path / "other.pt"), RUNTIME)
    other = {**settings, "teacher": {**settings["teacher"], "network": {**settings["teacher"]["network"], "depth": 16}}}
    with pytest.raises(NoiseKDError, match="was trained with teacher.network.depth = 10, this student's settings name 16"):
        train_students(other, [0], {"train": data["train"], "teacher_logits": str(table)}, _outs(tmp_path / "x", [0]),
                       RUNTIME)


def test_compiling_jobs_share_torch_compile_caches_under_the_results_folder(setup, monkeypatch):
    plan, _ = setup

    def runtime(compile: bool) -> Runtime:
        return Runtime.from_config({**plan.config, "train": {**plan.config["train"], "compile": compile}})

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    share_compile_cache(runtime(False))
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ
    share_compile_cache(runtime(True))
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(Path(plan.results).resolve() / ".cache" / "torchinductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/elsewhere")  # the user's choice wins
    share_compile_cache(runtime(True))
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/elsewhere"


def test_a_gpu_slurm_job_without_a_gpu_fails_at_once():
    from noisekd.pipeline import check_gpu_job

    slurm = {"SLURM_JOB_ID": "42", "SLURMD_NODENAME": "gpu07", "CUDA_VISIBLE_DEVICES": ""}
    with pytest.raises(NoiseKDError, match=r"SLURM job 42 on gpu07 asked for 1 GPU\(s\) \(config key resources.gpu\)"):
        check_gpu_job(1, "auto", slurm, lambda: False)
    check_gpu_job(1, "auto", slurm, lambda: True)  # the GPU is there
    check_gpu_job(1, "cpu", slurm, lambda: False)  # CPU asked for explicitly
    check_gpu_job(0, "auto", slurm, lambda: False)  # a CPU rule
    check_gpu_job(1, "auto", {}, lambda: False)  # not a SLURM job: a local run on a machine without a GPU
