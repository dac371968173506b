"""The linear study's settings (`noisekd.linear_study`), apart from its numerics and plotting so that the
workflow can check the `linear_study:` config keys when it parses the config, without importing those."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .errors import NoiseKDError

FACTORS: dict[str, tuple[str, ...]] = {
    "training": ("early_stopped", "zero_loss"),
    "teacher_knowledge": ("many_samples", "few_samples", "labels_only"),
    "decomposition": ("orthogonal_mix", "ill_conditioned_mix", "wide_hidden"),
}


@dataclass(frozen=True)
class StudyConfig:
    d: int = 50  # input dimension
    k: int = 8  # dimension of the clean-input subspace
    m: int = 2  # the student's outputs, its labels (< k: the labels do not determine the clean input)
    h: int = 8  # hidden width of teacher and student (>= k: the teacher can hold the whole subspace)
    teacher_outputs: int = 8  # outputs of the teacher's clean task (>= k); its first m are the labels
    sigma: float = 0.5  # input noise std of the student
    n_student: int = 30  # noisy training samples (< d: over-parameterised)
    n_teacher_few: int = 4  # clean samples of the unknowledgeable teacher (< k)
    n_teacher_many: int = 200  # clean samples of the knowledgeable teacher (>= k)
    n_val: int = 100  # noisy validation samples (early stopping)
    n_test: int = 2000  # fresh noisy test samples
    lam: float = 1.0  # weight of the feature term of student-teacher learning
    lr: float = 0.05  # student step size (full batch)
    init_scale: float = 1e-3  # std of the students' and teachers' initial weights
    steps: int = 20000  # at most this many steps for the zero-loss runs
    early_stop: str = "validation"  # "validation" (best validation step) or "fixed" (early_steps)
    val_window: int = 1000  # steps searched for the best validation step
    early_steps: int = 100  # steps of an early-stopped run when early_stop == "fixed"
    zero_loss_tol: float = 1e-4  # the zero-loss runs stop when the training objective is below this
    teacher_lr: float = 0.05
    teacher_steps: int = 20000
    teacher_tol: float = 1e-12  # teachers train until their clean training loss is below this
    eval_every: int = 5  # steps between test (and validation) evaluations
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7)
    condition_number: float = 1e3  # of the ill-conditioned re-mixing matrix B
    wide_h: int = 50  # hidden width of the over-wide teacher (and its student)
    factors: tuple[str, ...] = tuple(FACTORS)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "StudyConfig":
        """A config from a mapping; an unknown key or a bad value raises NoiseKDError naming the key."""
        values = dict(values or {})
        known = {f.name: f for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise NoiseKDError(f"linear study config key {key!r} is not a known setting "
                                   f"(known: {', '.join(known)})")
        kwargs = {}
        for key, value in values.items():
            default = known[key].default
            if isinstance(default, tuple):
                if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                    raise NoiseKDError(f"linear study config key {key!r} must be a list, got {value!r}")
                value = tuple(value)
            elif isinstance(default, bool) or isinstance(default, str):
                if not isinstance(value, type(default)):
                    raise NoiseKDError(f"linear study config key {key!r} must be a {type(default).__name__}, "
                                       f"got {value!r}")
            elif isinstance(default, int):
                if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                    raise NoiseKDError(f"linear study config key {key!r} must be an integer, got {value!r}")
                value = int(value)
            elif isinstance(default, float):
                if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                    raise NoiseKDError(f"linear study config key {key!r} must be a number, got {value!r}")
                value = float(value)
            kwargs[key] = value
        return cls(**kwargs)

    def __post_init__(self):
        def bad(key: str, why: str):
            raise NoiseKDError(f"linear study config key {key!r}: {why} (got {getattr(self, key)!r})")

        for key in ("d", "k", "m", "h", "teacher_outputs", "n_student", "n_teacher_few", "n_teacher_many", "n_val", "n_test", "steps",
                    "val_window", "early_steps", "teacher_steps", "eval_every", "wide_h"):
            if getattr(self, key) < 1:
                bad(key, "must be at least 1")
        for key in ("sigma", "lr", "init_scale", "zero_loss_tol", "teacher_lr", "teacher_tol"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) > 0):
                bad(key, "must be a positive number")
        if not (math.isfinite(self.lam) and self.lam > 0):
            bad("lam", "must be positive (lam = 0 is the baseline, always run)")
        if self.k >= self.d:
            bad("k", f"the clean subspace must be smaller than the input dimension d={self.d}")
        if self.n_student >= self.d:
            bad("n_student", f"must be below d={self.d} so that zero training loss is reachable")
        if self.n_teacher_few >= self.k:
            bad("n_teacher_few", f"must be below k={self.k} so that the teacher sees only part of the subspace")
        if self.n_teacher_many < self.k:
            bad("n_teacher_many", f"must be at least k={self.k} so that the teacher can learn the whole subspace")
        if self.m >= self.k:
            bad("m", f"must be below k={self.k}: with m >= k the labels determine the clean input, and a teacher "
                     "cannot know more than them")
        if self.h < self.k:
            bad("h", f"must be at least k={self.k} so that the teacher's hidden layer can hold the whole subspace")
        if self.teacher_outputs < self.k:
            bad("teacher_outputs", f"must be at least k={self.k} so that the teacher's clean task covers the "
                                   "whole subspace")
        if self.wide_h <= self.h:
            bad("wide_h", f"must exceed h={self.h}")
        if not (math.isfinite(self.condition_number) and self.condition_number >= 1):
            bad("condition_number", "must be a number >= 1")
        if self.early_stop not in ("validation", "fixed"):
            bad("early_stop", "must be 'validation' or 'fixed'")
        if not self.seeds:
            bad("seeds", "must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds) or any(
                isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0 for s in self.seeds):
            bad("seeds", "must be distinct non-negative integers")
        if not self.factors or any(f not in FACTORS for f in self.factors) or len(set(self.factors)) != len(self.factors):
            bad("factors", f"must be distinct names among {list(FACTORS)}")
