import pickle
import signal
import time

import pytest
import torch

import noisekd.checkpoints
import noisekd.data
import noisekd.execution
from noisekd.checkpoints import load_model, save_model
from noisekd.data import Augmentation, ImageData
from noisekd.errors import NoiseKDError
from noisekd.execution import TrainingInterrupted
from noisekd.methods import MethodParams, get_method
from noisekd.models import WRNSpec, build_model
from noisekd.settings import TrainConfig
from noisekd.train import fit


def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    # learnable: class-dependent brightness plus noise
    images = (labels.view(-1, 1, 1, 1) * 20 + torch.randint(0, 60, (n, 3, 8, 8), generator=g)).to(torch.uint8)
    return ImageData(images, labels, tuple(str(i) for i in range(10)))


CFG = TrainConfig(epochs=3, milestones=(2,), batch_size=32, seed=7)


def _run(method="ft", params=MethodParams(dropout=0.2), cfg=CFG, ckpt=None, log=lambda s: None, seed=1):
    teacher = build_model(WRNSpec(10, 1, dropout=params.dropout), 0)
    student = build_model(WRNSpec(10, 1, dropout=0.1), seed)  # student dropout too: every draw is seeded
    return fit(student, _data(), cfg, get_method(method), params, teacher=teacher,
               augmentation=Augmentation(crop_padding=2, hflip=True), checkpoint_path=ckpt, device="cpu", log=log)


def _state(result):
    return {k: v.clone() for k, v in result.model.state_dict().items()}


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_bit_identical_other_seed_different():
    a, b = _run(), _run()
    assert _equal(_state(a), _state(b))
    assert a.summary["history"] == [{**h, "images_per_s": h2["images_per_s"]}
                                    for h, h2 in zip(b.summary["history"], a.summary["history"])]
    c = _run(cfg=TrainConfig(epochs=3, milestones=(2,), batch_size=32, seed=8))
    assert not _equal(_state(a), _state(c))


def test_lr_schedule_follows_the_milestones():
    cfg = TrainConfig(epochs=200, milestones=(60, 120, 150))
    assert [cfg.lr_at(e) for e in (0, 59, 60, 119, 120, 150, 199)] == pytest.approx(
        [0.1, 0.1, 0.02, 0.02, 0.004, 0.0008, 0.0008])
    lrs = [h["lr"] for h in _run().summary["history"]]
    assert lrs == pytest.approx([0.1, 0.1, 0.02])


class Killed(Exception):
    pass


@pytest.mark.reliability
def test_resume_after_a_kill_between_epochs_is_bit_identical(tmp_path):
    reference = _state(_run())
    ckpt = tmp_path / "ckpt.pt"

    def die_at_epoch_3(line):
        if line.startswith("epoch    3/"):
            raise Killed  # after epoch 2's checkpoint, before epoch 3's

    with pytest.raises(Killed):
        _run(ckpt=ckpt, log=die_at_epoch_3)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2
    lines = []
    resumed = _run(ckpt=ckpt, log=lines.append)
    assert any(line.startswith("resumed from") for line in lines)
    assert _equal(_state(resumed), reference)


@pytest.mark.reliability
@pytest.mark.parametrize("kill_at_batch", [1, 4, 8])
def test_sigterm_mid_epoch_saves_a_checkpoint_and_resume_is_bit_identical(tmp_path, monkeypatch, kill_at_batch):
    reference = _state(_run())
    ckpt = tmp_path / "ckpt.pt"
    original = noisekd.data.DeviceSampler.gather
    calls = {"n": 0}

    def batch_then_sigterm(self, idx):
        calls["n"] += 1
        if calls["n"] == kill_at_batch:
            signal.raise_signal(signal.SIGTERM)  # what SLURM sends at a time limit
        return original(self, idx)

    monkeypatch.setattr(noisekd.data.DeviceSampler, "gather", batch_then_sigterm)
    with pytest.raises(TrainingInterrupted):
        _run(ckpt=ckpt)
    monkeypatch.setattr(noisekd.data.DeviceSampler, "gather", original)
    state = torch.load(ckpt, weights_only=True)
    assert (state["epoch"], state["step"]) == divmod(kill_at_batch, 3)  # 96 images / 32 = 3 steps per epoch
    assert _equal(_state(_run(ckpt=ckpt)), reference)


@pytest.mark.parametrize("interval_s, saves", [(0.0, 3), (1e9, 1)])
def test_checkpoints_are_at_least_the_interval_apart_and_the_last_epoch_always_saves(tmp_path, monkeypatch,
                                                                                     interval_s, saves):
    written = []
    real = noisekd.checkpoints.save_torch_atomic
    monkeypatch.setattr(noisekd.checkpoints, "save_torch_atomic", lambda path, obj: (written.append(obj["epoch"]),
                                                                                     real(path, obj)))
    cfg = TrainConfig(epochs=3, milestones=(2,), batch_size=32, seed=7, checkpoint_interval_s=interval_s)
    _run(method="hinton", params=MethodParams(), cfg=cfg, ckpt=tmp_path / "ckpt.pt")
    assert written == [1, 2, 3][-saves:]


@pytest.mark.reliability
def test_checkpoint_of_another_run_is_refused(tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    _run(ckpt=ckpt)
    with pytest.raises(NoiseKDError, match="different run"):
        _run(ckpt=ckpt, params=MethodParams(dropout=0.3))


@pytest.mark.reliability
def test_checkpoint_of_another_resolved_precision_is_refused(tmp_path, monkeypatch):
    # precision: auto is bf16 on a CPU with native bf16 and fp32 on one without; a retry on the other
    # kind of node must not continue the run in another precision.
    ckpt = tmp_path / "ckpt.pt"
    cfg = TrainConfig(epochs=3, milestones=(2,), batch_size=32, seed=7, precision="auto")
    monkeypatch.setattr(noisekd.execution, "cpu_has_native_bf16", lambda: True)
    assert _run(ckpt=ckpt, cfg=cfg).summary["config"]["precision"] == "bf16"
    monkeypatch.setattr(noisekd.execution, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(NoiseKDError, match="different run"):
        _run(ckpt=ckpt, cfg=cfg)


@pytest.mark.reliability
@pytest.mark.parametrize("change", ["labels", "teacher", "augmentation", "draws"])
def test_checkpoint_with_other_inputs_is_refused(tmp_path, change):
    # An interrupted run whose inputs changed upstream (new labels, another selected teacher, another
    # augmentation, another stream of draws) must start over, not resume with mixed inputs.
    ckpt = tmp_path / "ckpt.pt"

    def run(data=None, teacher_seed=0, aug=Augmentation(crop_padding=2, hflip=True), draws="student"):
        teacher = build_model(WRNSpec(10, 1), teacher_seed)
        return fit(build_model(WRNSpec(10, 1), 1), data or _data(), CFG, get_method("hinton"), MethodParams(),
                   teacher=teacher, augmentation=aug, checkpoint_path=ckpt, device="cpu", log=lambda s: None,
                   draws=draws)

    run()
    other = {"labels": dict(data=ImageData(_data().images, (_data().labels + 1) % 10, _data().classes)),
             "teacher": dict(teacher_seed=5), "augmentation": dict(aug=Augmentation(crop_padding=1, hflip=False)),
             "draws": dict(draws="teacher")}[change]
    with pytest.raises(NoiseKDError, match="different run"):
        run(**other)
    run()  # the same inputs resume


def test_teacher_and_student_of_one_seed_draw_independently():
    # The workflow trains teachers and students with the same seed numbers; their draws must differ.
    seen = {}
    original = noisekd.data.DeviceSampler.gather

    for draws in ("teacher", "student", ""):
        batches = []

        def spy(self, idx, batches=batches):
            batches.append(idx.clone())
            return original(self, idx)

        noisekd.data.DeviceSampler.gather = spy
        try:
            fit(build_model(WRNSpec(10, 1), 1), _data(), TrainConfig(epochs=1, milestones=(), batch_size=32, seed=2),
                get_method("baseline"), augmentation=None, device="cpu", log=lambda s: None, draws=draws)
        finally:
            noisekd.data.DeviceSampler.gather = original
        seen[draws] = torch.cat(batches)
    assert not torch.equal(seen["teacher"], seen["student"])
    # "" keeps the plain seed: the first permutation is torch.randperm from a generator seeded with 2
    assert torch.equal(seen[""], torch.randperm(96, generator=torch.Generator().manual_seed(2)))


@pytest.mark.reliability
def test_non_finite_loss_stops_with_epoch_and_step():
    cfg = TrainConfig(epochs=3, milestones=(), lr=1e12, batch_size=32, seed=0, check_every=1)
    with pytest.raises(NoiseKDError, match=r"non-finite loss at epoch \d+, step \d+"):
        _run(method="hinton", params=MethodParams(), cfg=cfg)


def test_progress_line_per_epoch():
    lines = []
    _run(log=lines.append)
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert len(epoch_lines) == 3
    for key in ("loss", "train_acc", "lr", "img/s"):
        assert key in epoch_lines[0]


@pytest.mark.reliability
@pytest.mark.parametrize("bad,match", [
    (dict(epochs=10, milestones=(5, 12)), "beyond the last epoch"),
    (dict(epochs=0), "epochs"),
    (dict(milestones=(120, 60)), "increasing"),
    (dict(lr=-0.1), "lr"),
])
def test_bad_train_config_is_refused(bad, match):
    with pytest.raises(NoiseKDError, match=match):
        TrainConfig(**bad)


@pytest.mark.reliability
def test_model_files_load_weights_only_and_refuse_other_architectures(tmp_path):
    model = build_model(WRNSpec(16, 2), 0)
    path = tmp_path / "model.pt"
    save_model(path, model, summary={"acc": 0.5})
    loaded = load_model(path, expected=WRNSpec(16, 2, dropout=0.3))  # dropout is not architecture
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(NoiseKDError, match=r"holds WRN-16-2 .* expected WRN-40-2"):
        load_model(path, expected=WRNSpec(40, 2))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(NoiseKDError, match="truncated.pt"):
        load_model(truncated)


class _Evil:
    def __reduce__(self):
        return (time.sleep, (0,))


@pytest.mark.reliability
def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"spec": {}, "state_dict": {}, "payload": _Evil()}, path)
    with pytest.raises(NoiseKDError, match="evil.pt.*weights-only"):
        load_model(path)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(NoiseKDError, match="raw.pt"):
        load_model(raw)


def test_dropout_masks_are_drawn_ahead_during_fit_and_the_models_come_back_unarmed():
    teacher = build_model(WRNSpec(10, 1, dropout=0.3), 0)
    student = build_model(WRNSpec(10, 1, dropout=0.1), 1)
    armed = {"teacher": [], "student": []}
    for name, net in (("teacher", teacher), ("student", student)):
        for layer in net.dropout_modules():  # hooks travel into fit's folded copy of the teacher
            layer.register_forward_pre_hook(lambda m, inp, name=name: armed[name].append(
                m.keep is not None and m.keep.shape[1:] == inp[0].shape[1:]))
    data = _data(n=80)  # batches of 32, 32 and 16: the last one reads a prefix of the masks
    fit(student, data, CFG, get_method("ft"), MethodParams(dropout=0.3), teacher=teacher, augmentation=Augmentation(),
        device="cpu", log=lambda s: None)
    assert len(armed["teacher"]) == len(armed["student"]) == 3 * 3 * 3 and all(armed["teacher"] + armed["student"])
    for net in (teacher, student):
        assert getattr(net, "dropout_keep", None) is None and all(m.keep is None for m in net.dropout_modules())
