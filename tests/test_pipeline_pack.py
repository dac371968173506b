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
from noisekd import pipeline, selection
from noisekd.config import load_config
from noisekd.errors import NoiseKDError
from noisekd.evaluate import read_rows_settings
from noisekd.layout import Layout
from noisekd.pipeline import (
    attack_students,
    compute_teacher_logits,
    evaluate_students,
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


@pytest.fixture(scope="module")
def ga_students(setup, tmp_path_factory):
    """The GA cell (no teacher; attacked) trained for seeds 0 and 1."""
    plan, data = setup
    outs = _outs(tmp_path_factory.mktemp("ga"), [0, 1])
    train_students(plan.student_settings("digits", "ga_s0.1"), [0, 1], {"train": data["train"]}, outs, RUNTIME,
                   teacher_seed=None)
    return {"test": data["test"], "models": [o["model"] for o in outs], "summaries": [o["summary"] for o in outs]}


def _frame(path):
    import pandas as pd

    return pd.read_parquet(path).drop(columns=["created"], errors="ignore")


@pytest.mark.parametrize("step", ["evaluate", "attack"])
def test_a_cells_seeds_evaluated_in_one_job_equal_each_seed_alone(setup, ga_students, tmp_path, step):
    plan, _ = setup
    run, settings_of = ((evaluate_students, plan.student_eval_settings) if step == "evaluate"
                        else (attack_students, plan.attack_settings))
    together = [str(tmp_path / "together" / f"seed{s}.parquet") for s in (0, 1)]
    alone = [str(tmp_path / "alone" / "seed1.parquet")]
    run(settings_of("digits", "ga_s0.1"), [0, 1], "digits", "ga_s0.1", ga_students, together, RUNTIME)
    one = {**ga_students, "models": ga_students["models"][1:], "summaries": ga_students["summaries"][1:]}
    run(settings_of("digits", "ga_s0.1"), [1], "digits", "ga_s0.1", one, alone, RUNTIME)
    import pandas as pd

    pd.testing.assert_frame_equal(_frame(together[1]), _frame(alone[0]))
    assert not _frame(together[0])["value"].equals(_frame(together[1])["value"])  # two models, two results
    for seed, path in zip((0, 1), together):
        # each seed's file records exactly the settings the aggregation expects of it (noisekd.lineage)
        assert read_rows_settings(path) == settings_of("digits", "ga_s0.1", seed)
        assert set(_frame(path)["seed"]) == {seed}
    assert not list(tmp_path.rglob("*.partial.parquet")), "side files are removed once every seed is written"


def test_a_killed_evaluation_job_redoes_only_the_unfinished_seeds(setup, ga_students, tmp_path):
    plan, _ = setup
    settings = plan.student_eval_settings("digits", "ga_s0.1")
    outs = [str(tmp_path / f"seed{s}" / "eval.parquet") for s in (0, 1)]
    calls = []

    def compute(kill_at):
        def run(seed_settings, identity, model_path):
            calls.append(seed_settings["seed"])
            if seed_settings["seed"] == kill_at:
                raise KeyboardInterrupt  # the job dies (time limit, node failure) during this seed
            row = {"metric": "test_acc", "value": float(seed_settings["seed"])}
            return pipeline.finish_rows([row], identity, {})
        return run

    with pytest.raises(KeyboardInterrupt):
        pipeline._cell_seeds(settings, [0, 1], "digits", "ga_s0.1", ga_students, outs, compute(kill_at=1))
    assert Path(Layout.partial(outs[0])).is_file() and not any(Path(o).exists() for o in outs)
    calls.clear()
    pipeline._cell_seeds(settings, [0, 1], "digits", "ga_s0.1", ga_students, outs, compute(kill_at=None))
    assert calls == [1], "the retry reuses seed 0's finished rows"
    assert [list(_frame(o)["value"]) for o in outs] == [[0.0], [1.0]]
    assert not any(Path(Layout.partial(o)).exists() for o in outs)
    # A side file of other settings (an edited config) or of another model (retrained) is not reused.
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        pipeline._cell_seeds(settings, [0, 1], "digits", "ga_s0.1", ga_students, outs, compute(kill_at=1))
    edited = {**settings, "evaluation": {**settings["evaluation"], "ood": None}}
    calls.clear()
    pipeline._cell_seeds(edited, [0, 1], "digits", "ga_s0.1", ga_students, outs, compute(kill_at=None))
    assert calls == [0, 1]


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
    from noisekd.execution import check_gpu_job

    slurm = {"SLURM_JOB_ID": "42", "SLURMD_NODENAME": "gpu07", "CUDA_VISIBLE_DEVICES": ""}
    with pytest.raises(NoiseKDError, match=r"SLURM job 42 on gpu07 asked for 1 GPU\(s\) \(config key resources.gpu\)"):
        check_gpu_job(1, "auto", slurm, lambda: False)
    check_gpu_job(1, "auto", slurm, lambda: True)  # the GPU is there
    check_gpu_job(1, "cpu", slurm, lambda: False)  # CPU asked for explicitly
    check_gpu_job(0, "auto", slurm, lambda: False)  # a CPU rule
    check_gpu_job(1, "auto", {}, lambda: False)  # not a SLURM job: a local run on a machine without a GPU


def test_freed_memory_is_kept_for_reuse_in_a_job():
    """After keep_freed_memory, a tensor allocated and freed step after step reuses the same pages
    instead of mapping (and page-faulting) fresh ones every step: counted with getrusage."""
    import ctypes.util
    import subprocess
    import sys

    if ctypes.util.find_library("c") != "libc.so.6":
        pytest.skip("not glibc")
    code = """if 1:
        import resource, sys, torch
        from noisekd.jobs import keep_freed_memory
        if sys.argv[1] == "keep":
            assert keep_freed_memory()
        torch.ones(1 << 24).sum()  # 64 MB: above glibc's largest dynamic mmap threshold (32 MB)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            torch.ones(1 << 24).sum()
        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
    faults = {mode: int(subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True,
                                       check=True).stdout) for mode in ("default", "keep")}
    pages = 20 * (1 << 26) // 4096  # every step faulting in all of its 64 MB again
    assert faults["default"] > 0.5 * pages and faults["keep"] <= 0.1 * pages, faults  # at most 2 steps of 20
