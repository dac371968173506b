"""From Python, a WRN teacher and a Hinton student train end to end on digits and the student reaches
>= 90 % test accuracy.  The wall time is printed, not asserted: timing claims come from measurements
on an otherwise idle machine (README, Performance), not from a unit test sharing the CPU."""

import time

import pytest

from noisekd.data import Augmentation
from noisekd.evaluate import accuracy
from noisekd.methods import get_method
from noisekd.models import WRNSpec, build_model
from noisekd.settings import TrainConfig
from noisekd.sources import load_digits
from noisekd.train import fit


@pytest.mark.slow
def test_teacher_and_hinton_student_on_digits():
    start = time.perf_counter()
    train, test = load_digits("train", size=16), load_digits("test", size=16)
    x = train.images.float() / 255
    mean, std = x.mean((0, 2, 3)).tolist(), x.std((0, 2, 3)).tolist()
    aug = Augmentation(crop_padding=2, hflip=False)  # digits are not mirror-symmetric
    cfg = TrainConfig(epochs=8, milestones=(4, 6), batch_size=64, seed=0)
    quiet = lambda line: None  # noqa: E731

    teacher = build_model(WRNSpec(16, 1, mean=tuple(mean), std=tuple(std)), seed=0)
    fit(teacher, train, cfg, get_method("baseline"), augmentation=aug, device="cpu", log=quiet)
    student = build_model(WRNSpec(10, 1, mean=tuple(mean), std=tuple(std)), seed=1)
    fit(student, train, cfg, get_method("hinton"), teacher=teacher, augmentation=aug, device="cpu", log=quiet)

    elapsed = time.perf_counter() - start
    teacher_acc, student_acc = accuracy(teacher, test), accuracy(student, test)
    print(f"teacher {teacher_acc:.4f} student {student_acc:.4f} in {elapsed:.1f}s")
    assert student_acc >= 0.90
    assert teacher_acc >= 0.90
