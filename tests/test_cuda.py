"""The CUDA fast paths (bf16 autocast, channels_last, fused SGD, CUDA graphs, compile): same method, same
draws, same result as the eager step.  Skipped without a GPU (CI has none); run on a GPU machine with
`pytest tests/test_cuda.py`.  The last tests (a GPU job on a node whose GPU torch cannot use) fake the
node and run everywhere."""

import pytest
import torch

from noisekd.data import Augmentation, ImageData
from noisekd.methods import MethodParams, get_method
from noisekd.models import WRNSpec, build_model
from noisekd.settings import TrainConfig
from noisekd.train import fit

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _data(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = (labels.view(-1, 1, 1, 1) * 20 + torch.randint(0, 60, (n, 3, 16, 16), generator=g)).to(torch.uint8)
    return ImageData(images, labels, tuple(str(i) for i in range(10)))


# Every kind of draw: crops and flips, input noise (SR), label re-draws (MC), teacher dropout (FT),
# teacher-logit noise (Noisy Teacher), plus the feature losses' paths (AT).
CASES = [
    ("ft", MethodParams(dropout=0.3)),
    ("sr", MethodParams(sigma=0.1)),
    ("mc", MethodParams(mc_rate=0.3)),
    ("noisy_teacher", MethodParams(nt_sigma=0.5, nt_rate=0.5)),
    ("at+hinton", MethodParams()),
    ("rkd_da", MethodParams()),
]


def _fit(method, params, **overrides):
    # 200 images at batch 32: 6 full steps (the first eager, then graph replays) and a partial one.
    config = TrainConfig(epochs=3, milestones=(2,), batch_size=32, seed=3, **overrides)
    teacher = build_model(WRNSpec(10, 1, dropout=params.dropout), 0)
    student = build_model(WRNSpec(10, 1), 1)
    result = fit(student, _data(), config, get_method(method), params, teacher=teacher,
                 augmentation=Augmentation(crop_padding=2, hflip=True), device="cuda", log=lambda s: None)
    return result


@needs_cuda
@pytest.mark.parametrize("method,params", CASES, ids=[c[0] for c in CASES])
def test_graph_replay_equals_the_eager_step(method, params):
    torch.use_deterministic_algorithms(True, warn_only=True)
    graphed = _fit(method, params, cuda_graphs=True)
    eager = _fit(method, params, cuda_graphs=False)
    stats = graphed.summary["cuda_graphs"]
    # one capture per learning rate (two here), every other full batch replayed
    assert stats["captures"] == 2 and stats["replays"] == 3 * 6 - 1 and stats["eager_steps"] == 1 + 3
    assert eager.summary["cuda_graphs"] is None
    for a, b in zip(graphed.summary["history"], eager.summary["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
        assert a["train_acc"] == b["train_acc"]
    sa, sb = graphed.model.state_dict(), eager.model.state_dict()
    for k in sa:
        torch.testing.assert_close(sa[k].float(), sb[k].float(), rtol=1e-4, atol=1e-5, msg=k)


@needs_cuda
def test_bf16_and_fp32_train_the_same_network():
    fast = _fit("hinton", MethodParams(), precision="bf16")
    exact = _fit("hinton", MethodParams(), precision="fp32", channels_last=False, cuda_graphs=False)
    assert fast.summary["precision"] == "bf16" and exact.summary["precision"] == "fp32"
    # Same data, draws and schedule; bf16 rounding only: the losses agree to a few percent.
    for a, b in zip(fast.summary["history"], exact.summary["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=0.05)


@needs_cuda
def test_same_seed_same_result_on_cuda():
    torch.use_deterministic_algorithms(True, warn_only=True)
    a = _fit("sr", MethodParams(sigma=0.1))
    b = _fit("sr", MethodParams(sigma=0.1))
    assert a.summary["history"][-1]["loss"] == b.summary["history"][-1]["loss"]
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


@needs_cuda
@pytest.mark.parametrize("method,params", [("hinton", MethodParams()), CASES[0]], ids=["hinton", "ft"])
def test_compiled_step_trains(method, params):
    """Fickle Teacher too: its dropout teacher compiles whole (masks drawn ahead), same draws as eager."""
    compiled = _fit(method, params, compile=True)
    eager = _fit(method, params)
    assert compiled.summary["compiled"]
    for a, b in zip(compiled.summary["history"], eager.summary["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=0.05)


@needs_cuda
def test_compiled_dropout_network_trains_without_graph_breaks():
    """A teacher trained with dropout (the FT teachers): one graph per compiled forward."""
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    config = TrainConfig(epochs=2, milestones=(), batch_size=32, seed=3, compile=True)
    fit(build_model(WRNSpec(10, 1, dropout=0.3), 1), _data(), config, get_method("baseline"), MethodParams(),
        augmentation=Augmentation(crop_padding=2, hflip=True), device="cuda", log=lambda s: None)
    assert sum(torch._dynamo.utils.counters["graph_break"].values()) == 0


@needs_cuda
@pytest.mark.parametrize("method,params", [CASES[0], CASES[3], CASES[4]], ids=["ft", "noisy_teacher", "at+hinton"])
def test_teacher_on_a_side_stream_changes_no_number(method, params):
    torch.use_deterministic_algorithms(True, warn_only=True)
    side = _fit(method, params, teacher_stream=True)
    inline = _fit(method, params, teacher_stream=False)
    assert [h["loss"] for h in side.summary["history"]] == [h["loss"] for h in inline.summary["history"]]
    assert all(torch.equal(a, b) for a, b in zip(side.model.state_dict().values(), inline.model.state_dict().values()))


@needs_cuda
def test_runs_side_by_side_equal_runs_alone():
    """Seeds of one job train in threads on their own streams; each ends as it would alone."""
    from noisekd.execution import run_side_by_side

    torch.use_deterministic_algorithms(True, warn_only=True)
    results = {}

    def task(name, method, params):
        return lambda: results.__setitem__(name, _fit(method, params))

    run_side_by_side([task("sr", *CASES[1]), task("ft", *CASES[0])], torch.device("cuda"))
    for name, (method, params) in (("sr", CASES[1]), ("ft", CASES[0])):
        alone = _fit(method, params)
        assert [h["loss"] for h in results[name].summary["history"]] == [h["loss"] for h in alone.summary["history"]]
        assert all(torch.equal(a, b) for a, b in zip(results[name].model.state_dict().values(),
                                                      alone.model.state_dict().values()))


@needs_cuda
@pytest.mark.parametrize("method,params", CASES[1:4], ids=[c[0] for c in CASES[1:4]])
def test_cached_teacher_logits_on_cuda_replay_as_eager_and_match_the_live_teacher(method, params):
    """The logits table on the GPU, looked up inside a replayed graph: same as eager; same as the
    teacher's forward up to bf16 rounding (the same draws, so the same batches and noise)."""
    from noisekd import teacher_logits

    torch.use_deterministic_algorithms(True, warn_only=True)
    teacher = build_model(WRNSpec(10, 1), 0)
    aug = Augmentation(crop_padding=2, hflip=True)
    table = teacher_logits.compute(teacher, _data().to("cuda"), aug, "bf16", True, log=lambda s: None)

    def run(**kw):
        config = TrainConfig(epochs=3, milestones=(2,), batch_size=32, seed=3, **kw)
        return fit(build_model(WRNSpec(10, 1), 1), _data(), config, get_method(method), params,
                   teacher=None, augmentation=aug, device="cuda", log=lambda s: None, teacher_logits=table)

    graphed, eager, live = run(cuda_graphs=True), run(cuda_graphs=False), _fit(method, params)
    assert graphed.summary["cuda_graphs"]["replays"] == 3 * 6 - 1
    for g, e, t in zip(graphed.summary["history"], eager.summary["history"], live.summary["history"]):
        assert g["loss"] == pytest.approx(e["loss"], rel=1e-5, abs=1e-6)
        assert g["loss"] == pytest.approx(t["loss"], rel=0.05)


# -- a GPU job on a node whose GPU torch cannot use: faked, so these run without a GPU ---------------

SLURM_ENV = {"SLURM_JOB_ID": "42", "SLURMD_NODENAME": "gpu07", "CUDA_VISIBLE_DEVICES": "0"}


def _gpu_job_error(monkeypatch, torch_cuda, driver) -> str:
    from noisekd import execution
    from noisekd.errors import NoiseKDError

    monkeypatch.setattr(torch.version, "cuda", torch_cuda)
    monkeypatch.setattr(execution, "nvidia_driver_version", lambda: driver)
    with pytest.raises(NoiseKDError) as error:
        execution.check_gpu_job(1, "auto", SLURM_ENV, lambda: False)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("SLURM job 42 on gpu07 asked for 1 GPU(s) (config key resources.gpu) but sees no "
                              "CUDA device (CUDA_VISIBLE_DEVICES='0'): ")
    assert message.endswith("; or set device: cpu to run on CPUs")
    return message


def test_a_driver_too_old_for_the_torch_build_is_named_with_the_fix(monkeypatch):
    message = _gpu_job_error(monkeypatch, "13.0", "535.104.05")
    version = torch.__version__.split("+")[0]
    assert "the NVIDIA driver 535.104.05 is too old" in message
    assert "built for CUDA 13.0 (needs driver >= 580)" in message
    assert f"pip install torch=={version} " in message
    assert "--index-url https://download.pytorch.org/whl/cu126" in message
    # a CUDA 12 build on a CUDA 11 driver: the cu118 wheels
    assert "whl/cu118" in _gpu_job_error(monkeypatch, "12.8", "470.256.02")
    assert "update the NVIDIA driver" in _gpu_job_error(monkeypatch, "12.8", "390.157")


def test_a_cpu_only_torch_build_and_a_node_without_a_driver_are_told_apart(monkeypatch):
    cpu_build = _gpu_job_error(monkeypatch, None, "580.65.06")
    assert "is a CPU-only build (torch.version.cuda is None)" in cpu_build and "whl/cu130" in cpu_build
    no_driver = _gpu_job_error(monkeypatch, "13.0", None)
    assert "built for CUDA 13.0 but no NVIDIA driver was found" in no_driver
    matching = _gpu_job_error(monkeypatch, "13.0", "580.65.06")  # the driver fits: CUDA_VISIBLE_DEVICES or the GPU
    assert "should match: check CUDA_VISIBLE_DEVICES and nvidia-smi" in matching


def test_gpu_job_check_passes_where_it_should(monkeypatch):
    from noisekd import execution

    monkeypatch.setattr(execution, "nvidia_driver_version", lambda: pytest.fail("no diagnosis needed"))
    execution.check_gpu_job(1, "auto", SLURM_ENV, lambda: True)  # the GPU is there
    execution.check_gpu_job(1, "cpu", SLURM_ENV, lambda: False)  # CPU asked for explicitly
    execution.check_gpu_job(0, "auto", SLURM_ENV, lambda: False)  # a CPU rule
    execution.check_gpu_job(1, "auto", {}, lambda: False)  # a local run on a machine without a GPU


@pytest.mark.parametrize("text,version", [
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n", "535.104.05"),
    ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build  (dvs-builder@U16)  "
     "Thu Jan 23 22:50:36 UTC 2025\nGCC version:  gcc version 12.3.0\n", "570.86.15"),
    ("NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  550.54.15  Release Build\n", "550.54.15"),
])
def test_driver_version_from_the_kernel_module(tmp_path, text, version):
    from noisekd.execution import nvidia_driver_version

    (tmp_path / "version").write_text(text)
    no_smi = lambda *a, **k: pytest.fail("nvidia-smi not needed")  # noqa: E731
    assert nvidia_driver_version(tmp_path / "version", run=no_smi) == version


def test_driver_version_from_nvidia_smi_with_a_timeout(tmp_path):
    import subprocess

    from noisekd.execution import nvidia_driver_version

    missing = tmp_path / "no-such-file"
    calls = []

    def smi(args, **kw):
        calls.append((args, kw["timeout"]))
        return subprocess.CompletedProcess(args, 0, stdout="550.54.15\n550.54.15\n", stderr="")

    assert nvidia_driver_version(missing, timeout=3, run=smi) == "550.54.15"
    assert calls == [(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], 3)]

    def hangs(args, **kw):
        raise subprocess.TimeoutExpired(args, kw["timeout"])

    def absent(args, **kw):
        raise FileNotFoundError("nvidia-smi")

    def fails(args, **kw):
        return subprocess.CompletedProcess(args, 9, stdout="NVIDIA-SMI has failed\n", stderr="")

    assert [nvidia_driver_version(missing, run=r) for r in (hangs, absent, fails)] == [None, None, None]
