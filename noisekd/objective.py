"""The one training objective: a method's weighted loss terms on one batch (`distillation_loss`).

A method (`noisekd.methods`) names loss terms and their weights; `TERMS` computes each term from the
step's logits, targets and, where a term needs them, the networks' features.  The teacher runs under
no_grad with its BatchNorm frozen (`set_teacher_mode`), on a side stream on CUDA where asked.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch

from . import losses
from .errors import NoiseKDError
from .methods import TERM_NEEDS, Method, MethodParams
from .models import WideResNet
from .noise import noisy_input, perturb_logits, redraw_labels


@dataclass
class StepContext:
    student_logits: torch.Tensor
    targets: torch.Tensor
    teacher_logits: torch.Tensor | None = None
    student_features: object = None
    teacher_features: object = None


TERMS: dict[str, Callable[[StepContext, MethodParams], torch.Tensor]] = {
    "ce": lambda c, p: losses.cross_entropy(c.student_logits, c.targets),
    "kd": lambda c, p: losses.hinton_kd(c.student_logits, c.teacher_logits, p.tau),
    "logit_l2": lambda c, p: losses.logit_l2(c.student_logits, c.teacher_logits),
    "at": lambda c, p: losses.attention_transfer(c.student_features.groups, c.teacher_features.groups),
    "sp": lambda c, p: losses.similarity_preserving(c.student_features.last, c.teacher_features.last),
    "rkd_d": lambda c, p: losses.rkd_distance(c.student_features.embedding, c.teacher_features.embedding),
    "rkd_a": lambda c, p: losses.rkd_angle(c.student_features.embedding, c.teacher_features.embedding),
    "fm": lambda c, p: losses.feature_mimicry(c.student_features.embedding, c.teacher_features.embedding),
}
FEATURE_TERMS = {t for t, need in TERM_NEEDS.items() if need == "features"}
TEACHER_TERMS = {t for t, need in TERM_NEEDS.items() if need}


def set_teacher_mode(teacher: WideResNet, fickle: bool) -> None:
    """BatchNorm always in eval mode (frozen statistics); dropout active only for Fickle Teacher."""
    teacher.eval()
    for module in teacher.dropout_modules():
        module.train(fickle)
    for p in teacher.parameters():
        p.requires_grad_(False)


def _side_stream(stream: torch.cuda.Stream | None):
    """Run a block on `stream` after all work queued so far on the current stream (CUDA), or inline."""
    if stream is None:
        return contextlib.nullcontext()
    stream.wait_stream(torch.cuda.current_stream())
    return torch.cuda.stream(stream)


def distillation_loss(
    method: Method,
    params: MethodParams,
    student: WideResNet,
    teacher: WideResNet | None,
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    generator: torch.Generator,
    teacher_stream: torch.cuda.Stream | None = None,
    teacher_logits: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The one training objective: (loss, student logits) for a batch of float images in [0, 1].

    Draw order from `generator` (fixed, for determinism): targets, input noise, the teacher's dropout
    masks, logit noise, the student's dropout masks (masks drawn ahead of each forward, all at once,
    where `fit` armed the network, else by each dropout layer during the forward).

    With a `teacher_stream` (CUDA), the teacher's forward runs on it, side by side with the student's
    forward, and joins before the loss.  Random draws are reserved in launch order on the host, so the
    numbers are those of the sequential step.

    `teacher_logits`, the teacher's logits of these very images looked up in a precomputed table
    (`noisekd.teacher_logits`), stand in for the teacher's forward: no random draw changes.
    """
    terms = method.terms(params)
    targets = redraw_labels(labels, params.mc_rate, num_classes, generator) if method.relabel else labels
    student_input = images
    if method.student_input == "gaussian":
        student_input = noisy_input(images, params.sigma, generator, clip=params.clip_noisy_input)
    want_features = bool(FEATURE_TERMS & terms.keys())
    ctx = StepContext(student_logits=None, targets=targets)  # type: ignore[arg-type]
    if TEACHER_TERMS & terms.keys():
        if teacher_logits is not None and want_features:
            raise NoiseKDError(f"method {method.name} needs the teacher's features, not only its logits")
        if teacher_logits is None and teacher is None:
            raise NoiseKDError(f"method {method.name} needs a teacher")
        with _side_stream(teacher_stream), torch.no_grad():
            if teacher_logits is not None:
                ctx.teacher_logits = teacher_logits
            else:
                teacher.draw_dropout()
                out = teacher(images, features=want_features)
                ctx.teacher_logits, ctx.teacher_features = out if want_features else (out, None)
            if method.perturb_teacher_logits:
                ctx.teacher_logits = perturb_logits(ctx.teacher_logits, params.nt_sigma, params.nt_rate, generator)
    student.draw_dropout()
    out = student(student_input, features=want_features)
    ctx.student_logits, ctx.student_features = out if want_features else (out, None)
    if teacher_stream is not None:
        # Join.  Every step forks after all earlier work and joins before the loss, so tensors that
        # cross the two streams are never reused by one while the other may still read them.
        torch.cuda.current_stream().wait_stream(teacher_stream)
    loss = sum(weight * TERMS[name](ctx, params) for name, weight in terms.items())
    return loss, ctx.student_logits
