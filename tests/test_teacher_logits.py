"""Cached teacher logits: the table holds what the teacher's forward gives on the very augmented image,
and a run that looks logits up makes the same random draws and (up to rounding) the same steps."""

import pytest
import torch
import torch.nn.functional as F

from noisekd import teacher_logits
from noisekd.checkpoints import save_model
from noisekd.data import ImageData, crop_flip, draw_crop_flip
from noisekd.errors import NoiseKDError
from noisekd.methods import METHODS, MethodParams, get_method
from noisekd.models import WRNSpec, build_model
from noisekd.settings import Augmentation, TrainConfig, augmentation_variants
from noisekd.train import fit

AUG = Augmentation(crop_padding=2, hflip=True)
CACHEABLE = {"hinton", "sr", "mc", "noisy_teacher", "noisy_teacher_kl"}


def _data(n=48, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return ImageData(images, torch.randint(0, 10, (n,), generator=g), tuple(str(i) for i in range(10)))


def _reference_crop_flip(image, oy, ox, flip, p):
    """One image at a time, the way a torchvision transform would: pad, slice, mirror."""
    h, w = image.shape[-2:]
    out = F.pad(image, (p, p, p, p))[:, oy : oy + h, ox : ox + w]
    return out.flip(-1) if flip else out


def test_variants_count_every_crop_offset_and_flip():
    assert augmentation_variants(Augmentation(4, True)) == 162  # CIFAR-10: 9 x 9 offsets x 2
    assert augmentation_variants(Augmentation(4, False)) == 81  # SVHN
    assert augmentation_variants(Augmentation(0, False)) == augmentation_variants(None) == 1


def test_crop_flip_draws_offsets_then_flips_and_matches_a_per_image_reference():
    images = _data().images
    variant = draw_crop_flip(len(images), AUG, images.device, torch.Generator().manual_seed(3))
    # The same draws, made by hand in the documented order: offsets y, x, then flips.
    g = torch.Generator().manual_seed(3)
    oy, ox = torch.randint(0, 5, (48,), generator=g), torch.randint(0, 5, (48,), generator=g)
    flip = torch.rand(48, generator=g) < 0.5
    assert torch.equal(variant, (flip.long() * 5 + oy) * 5 + ox)
    out = crop_flip(images, AUG, variant)
    for i in range(len(images)):
        assert torch.equal(out[i], _reference_crop_flip(images[i], int(oy[i]), int(ox[i]), bool(flip[i]), 2))


def test_cacheable_methods_are_exactly_those_whose_teacher_gives_only_clean_logits():
    params = MethodParams(sigma=0.1, dropout=0.3, mc_rate=0.2, nt_sigma=0.5, nt_rate=0.5)
    assert {name for name, m in METHODS.items() if m.cacheable(params)} == CACHEABLE


def test_table_holds_the_teachers_logits_of_each_augmented_image():
    data = _data()
    teacher = build_model(WRNSpec(10, 2), 0)
    teacher.train()  # fit and compute must both use eval mode, with frozen statistics
    teacher(torch.rand(16, 3, 8, 8))
    logits = teacher_logits.compute(teacher, data, AUG, "fp32", False, batch_size=20, log=lambda s: None)
    assert logits.shape == (48, 50, 10) and logits.dtype == torch.float32
    teacher.eval()
    for i, v in [(0, 0), (5, 12), (47, 49), (20, 31)]:
        image = crop_flip(data.images[i : i + 1], AUG, torch.tensor([v]))
        with torch.no_grad():
            expected = teacher(image.float() / 255)
        torch.testing.assert_close(logits[i, v], expected[0], rtol=1e-4, atol=1e-5)


def _run(method, params, teacher=None, cached=None, ckpt=None):
    cfg = TrainConfig(epochs=2, milestones=(1,), batch_size=16, seed=0, precision="fp32")
    student = build_model(WRNSpec(10, 1), 1)
    result = fit(student, _data(), cfg, get_method(method), params, teacher=teacher, augmentation=AUG, device="cpu",
                 log=lambda s: None, teacher_logits=cached, checkpoint_path=ckpt)
    return result, torch.load(ckpt, weights_only=True)


@pytest.mark.parametrize("method,params", [
    ("hinton", MethodParams()),
    ("sr", MethodParams(sigma=0.1)),
    ("mc", MethodParams(mc_rate=0.3)),
    ("noisy_teacher", MethodParams(nt_sigma=0.5, nt_rate=0.5)),
])
def test_cached_run_makes_the_same_draws_and_steps_as_the_teacher_run(tmp_path, method, params):
    teacher = build_model(WRNSpec(10, 2), 0)
    table = teacher_logits.compute(teacher, _data(), AUG, "fp32", False, log=lambda s: None)
    live, live_state = _run(method, params, teacher=teacher, ckpt=tmp_path / "live.pt")
    cached, cached_state = _run(method, params, cached=table, ckpt=tmp_path / "cached.pt")
    assert torch.equal(live_state["generator"], cached_state["generator"])  # not one draw more or less
    for a, b in zip(live_state["history"], cached_state["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    for k, v in live.model.state_dict().items():
        torch.testing.assert_close(cached.model.state_dict()[k], v, rtol=1e-3, atol=1e-4)
    assert cached.summary["teacher_logits"] == "cached" and live.summary["teacher_logits"] is None
    again, _ = _run(method, params, cached=table, ckpt=tmp_path / "again.pt")  # and it is reproducible
    assert all(torch.equal(v, again.model.state_dict()[k]) for k, v in cached.model.state_dict().items())


def test_a_run_refuses_cached_logits_it_cannot_use(tmp_path):
    table = torch.zeros(48, 50, 10)
    with pytest.raises(NoiseKDError, match="at cannot use cached teacher logits"):
        _run("at", MethodParams(), cached=table, ckpt=tmp_path / "a.pt")
    with pytest.raises(NoiseKDError, match="ft cannot use cached teacher logits"):
        _run("ft", MethodParams(dropout=0.3), cached=table, ckpt=tmp_path / "b.pt")
    with pytest.raises(NoiseKDError, match=r"shape \(48, 25, 10\), this run needs \(48, 50, 10\)"):
        _run("hinton", MethodParams(), cached=table[:, :25], ckpt=tmp_path / "c.pt")


def test_a_checkpoint_of_the_uncached_run_is_not_resumed_with_cached_logits(tmp_path):
    teacher = build_model(WRNSpec(10, 2), 0)
    table = teacher_logits.compute(teacher, _data(), AUG, "fp32", False, log=lambda s: None)
    _run("hinton", MethodParams(), teacher=teacher, ckpt=tmp_path / "ckpt.pt")
    with pytest.raises(NoiseKDError, match="belongs to a different run"):
        _run("hinton", MethodParams(), cached=table, ckpt=tmp_path / "ckpt.pt")


def test_cache_file_round_trip_and_refusals_name_the_file_and_what_differs(tmp_path):
    data, teacher = _data(), build_model(WRNSpec(10, 2), 0)
    save_model(tmp_path / "teacher.pt", teacher)
    table = teacher_logits.compute(teacher, data, AUG, "fp32", False, log=lambda s: None)
    path = tmp_path / "train_logits.pt"
    teacher_logits.save(path, table, teacher_logits.identity(tmp_path / "teacher.pt", data, AUG, "fp32"))
    loaded, ident = teacher_logits.load(path, data, AUG, "fp32", 10)
    assert torch.equal(loaded, table) and ident["n"] == 48
    with pytest.raises(NoiseKDError, match=rf"{path} were computed with precision='fp32', this run needs 'bf16'"):
        teacher_logits.load(path, data, AUG, "bf16", 10)
    with pytest.raises(NoiseKDError, match="computed with augmentation="):
        teacher_logits.load(path, data, Augmentation(2, False), "fp32", 10)
    other = _data(seed=1)
    with pytest.raises(NoiseKDError, match=f"{path} were computed on other training images"):
        teacher_logits.load(path, other, AUG, "fp32", 10)
    with pytest.raises(NoiseKDError, match="is not a noisekd teacher-logits file"):
        teacher_logits.load(tmp_path / "teacher.pt", data, AUG, "fp32", 10)


def test_bf16_table_holds_what_the_bf16_step_gives():
    data, teacher = _data(n=8), build_model(WRNSpec(10, 2), 0)
    table = teacher_logits.compute(teacher, data, AUG, "bf16", True, log=lambda s: None)
    assert table.dtype == torch.bfloat16
    image = crop_flip(data.images[:1], AUG, torch.tensor([7]))
    teacher.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = teacher((image.float() / 255).contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(table[0, 7].float(), expected[0].float(), rtol=2e-2, atol=2e-2)
