"""The method registry: every distillation method as a small declarative entry.

A method says what the student sees, whether and how the teacher is used, how targets or teacher
logits are perturbed, and which weighted loss terms make up the objective.  The one training step in
`noisekd.train` interprets these entries; no method has a training loop of its own.

Conventions that hold for every method:
- The teacher always sees the clean (augmented) image, runs under no_grad with BatchNorm in eval
  mode and never receives gradients.  Fickle Teacher additionally keeps the teacher's dropout active.
- Gaussian input noise x + N(0, sigma^2) is *not* clipped to [0, 1] by default: Eq. 2 of the paper
  and Gaussian augmentation as in randomized smoothing (Cohen et al.) add plain white noise, and
  clipping would bias it (a pixel at 0 or 1 could only move inwards).  `clip_noisy_input` turns
  clipping on.
- Cross-entropy is always on the student's logits for the student's input and the (possibly
  re-drawn) targets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Callable, Literal

from .errors import NoiseKDError


@dataclass(frozen=True)
class MethodParams:
    """Hyper-parameters of all methods; each is a config value.  Defaults are the paper's."""

    alpha: float = 0.9  # KD balance (Eq. 1)
    tau: float = 4.0  # KD temperature
    beta: float = 1000.0  # attention transfer (Zagoruyko & Komodakis)
    gamma: float = 3000.0  # similarity preserving (Tung & Mori)
    lambda_d: float = 25.0  # RKD distance (Park et al.)
    lambda_a: float = 50.0  # RKD angle
    lambda_fm: float = 1.0  # clean->noisy feature mimicry (Hong et al.); not given in the papers
    sigma: float = 0.0  # std of Gaussian input noise (GA, SR, feature mimicry), pixel scale [0, 1]
    dropout: float = 0.0  # teacher dropout rate (Fickle Teacher), selects the dropout teacher
    mc_rate: float = 0.0  # per-batch label re-draw probability r (Messy Collaboration)
    nt_sigma: float = 0.0  # Noisy Teacher: std of xi in z * (1 + xi)
    nt_rate: float = 0.0  # Noisy Teacher: probability that a sample's teacher logits are perturbed
    clip_noisy_input: bool = False

    def __post_init__(self) -> None:
        for name in ("sigma", "tau", "beta", "gamma", "lambda_d", "lambda_a", "lambda_fm", "nt_sigma"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise NoiseKDError(f"method parameter {name} must be a finite number >= 0, got {value}")
        if self.tau == 0:
            raise NoiseKDError("method parameter tau must be > 0")
        for name in ("alpha", "mc_rate", "nt_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise NoiseKDError(f"method parameter {name} must be in [0, 1], got {value}")
        if not 0.0 <= self.dropout < 1.0:
            raise NoiseKDError(f"method parameter dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def from_dict(cls, values: dict) -> "MethodParams":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise NoiseKDError(f"unknown method parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


Weights = Callable[[MethodParams], dict[str, float]]

# The loss terms a method's weights may name (computed by noisekd.objective.TERMS): what each needs of
# the teacher (nothing, its logits, or its features), and the parameters it reads beyond its weight.
TERM_NEEDS: dict[str, str | None] = {"ce": None, "kd": "logits", "logit_l2": "logits", "at": "features",
                                     "sp": "features", "rkd_d": "features", "rkd_a": "features", "fm": "features"}
TERM_PARAMS: dict[str, tuple[str, ...]] = {"kd": ("tau",)}
# Loss terms that a teacher's logits alone serve: a logits table can then stand in for the teacher.
LOGIT_TERMS = frozenset(t for t, need in TERM_NEEDS.items() if need != "features")

# A cell is named by its method and the parameters that distinguish it (e.g. `sr_s0.05`, `ft_p0.3`),
# and labelled in tables as the paper does (`SR σ=0.05`, `FT-0.3`).
PARAM_SHORT = {"sigma": "s", "dropout": "p", "mc_rate": "r", "nt_sigma": "ns", "nt_rate": "nr"}


def format_number(x: float) -> str:
    """A parameter value in names and labels: 0.05 -> '0.05', 4.0 -> '4'."""
    return f"{float(x):g}"


class _Reads:
    """Stands in for MethodParams and records which fields a weight function reads."""

    def __init__(self, params: MethodParams):
        self._params, self.names = params, set()

    def __getattr__(self, name: str):
        self.names.add(name)
        return getattr(self._params, name)


@dataclass(frozen=True)
class Method:
    name: str
    label: str  # as tables show it, e.g. "Hinton", "AT+FT", "Noisy Teacher (L2)"
    description: str
    weights: Weights  # loss term name -> weight, see TERM_NEEDS and noisekd.objective.TERMS
    student_input: Literal["clean", "gaussian"] = "clean"
    teacher: bool = False  # needs a teacher at all
    fickle_teacher: bool = False  # teacher trained with dropout `dropout`, dropout kept active
    relabel: bool = False  # per-batch random re-draw of targets with probability mc_rate
    perturb_teacher_logits: bool = False  # Noisy Teacher: z * (1 + xi) for a fraction nt_rate
    paper_params: tuple[str, ...] = field(default=())  # the parameters that name a cell, e.g. sigma

    def terms(self, params: MethodParams) -> dict[str, float]:
        return {name: float(w) for name, w in self.weights(params).items() if w != 0}

    def reads(self, params: MethodParams) -> tuple[str, ...]:
        """The parameters that change this method's student: its weights' inputs, its loss terms' own
        and its noise's.  A student's settings hold these alone, so that editing another one (tau, for a
        baseline or an AT student) reruns nothing."""
        recorder = _Reads(params)
        self.weights(recorder)  # type: ignore[arg-type]
        names = set(recorder.names)
        for term in self.terms(params):
            names.update(TERM_PARAMS.get(term, ()))
        if self.student_input == "gaussian":
            names |= {"sigma", "clip_noisy_input"}
        if self.fickle_teacher:
            names.add("dropout")
        if self.relabel:
            names.add("mc_rate")
        if self.perturb_teacher_logits:
            names |= {"nt_sigma", "nt_rate"}
        return tuple(f.name for f in fields(MethodParams) if f.name in names)

    def settings(self, params: MethodParams) -> dict:
        """The values of `reads(params)`: a student job's `method_params` settings."""
        return {name: getattr(params, name) for name in self.reads(params)}

    def cell_name(self, params: dict, label_corruption: float = 0.0) -> str:
        """A cell's name: the method, the parameters that distinguish it, the label corruption."""
        parts = [self.name] + [f"{PARAM_SHORT[k]}{format_number(params[k])}" for k in self.paper_params]
        if label_corruption > 0:
            parts.append(f"lc{format_number(label_corruption)}")
        return "_".join(parts)

    def cell_label(self, params: dict, label_corruption: float = 0.0) -> str:
        """A cell's label in tables, e.g. `FT-0.3`, `SR σ=0.05`, `MC r=0.2 (30% noisy labels)`."""
        label = self.label
        if "dropout" in params:
            label += f"-{format_number(params['dropout'])}"  # the paper's FT-x
        if "sigma" in params:
            label += f" σ={format_number(params['sigma'])}"
        if "mc_rate" in params:
            label += f" r={format_number(params['mc_rate'])}"
        if "nt_sigma" in params or "nt_rate" in params:
            label += f", σ={format_number(params.get('nt_sigma', 0))}, rate {format_number(params.get('nt_rate', 0))}"
        if label_corruption > 0:
            label += f" ({format_number(100 * label_corruption)}% noisy labels)"
        return label

    def cacheable(self, params: MethodParams) -> bool:
        """Whether the teacher contributes only logits of the clean image and is deterministic, so a
        table of its logits (`noisekd.teacher_logits`) can stand in for it."""
        return self.teacher and not self.fickle_teacher and set(self.terms(params)) <= LOGIT_TERMS

    def check(self, params: MethodParams) -> None:
        """Refuse parameter values that would silently turn a method into another one."""
        if self.student_input == "gaussian" and params.sigma <= 0:
            raise NoiseKDError(f"method {self.name} needs sigma > 0, got {params.sigma}")
        if self.fickle_teacher and params.dropout <= 0:
            raise NoiseKDError(f"method {self.name} needs a dropout teacher (dropout > 0), got {params.dropout}")
        if self.perturb_teacher_logits and (params.nt_sigma <= 0 or params.nt_rate <= 0):
            raise NoiseKDError(f"method {self.name} needs nt_sigma > 0 and nt_rate > 0")
        if self.relabel and params.mc_rate <= 0:
            raise NoiseKDError(f"method {self.name} needs mc_rate > 0, got {params.mc_rate}")


def _ce(p: MethodParams) -> dict[str, float]:
    return {"ce": 1.0}


def _hinton(p: MethodParams) -> dict[str, float]:
    """Eq. 1: (1 - alpha) CE + alpha tau^2 KL."""
    return {"ce": 1.0 - p.alpha, "kd": p.alpha}


# The feature-based methods, each added to CE alone (as published), to Hinton (+H) or to Fickle
# Teacher (+FT) as in Table 2.  AT's weight is beta/2: Zagoruyko & Komodakis' Eq. 2 and their code
# multiply the summed attention loss by beta/2 with beta = 1000.
FEATURE_METHODS: dict[str, tuple[str, str, Weights]] = {
    "at": ("AT", "Attention transfer (Zagoruyko & Komodakis)", lambda p: {"at": p.beta / 2}),
    "sp": ("SP", "Similarity preserving (Tung & Mori)", lambda p: {"sp": p.gamma}),
    "rkd_d": ("RKD-D", "Relational KD, distance (Park et al.)", lambda p: {"rkd_d": p.lambda_d}),
    "rkd_a": ("RKD-A", "Relational KD, angle (Park et al.)", lambda p: {"rkd_a": p.lambda_a}),
    "rkd_da": ("RKD-DA", "Relational KD, distance and angle (Park et al.)",
               lambda p: {"rkd_d": p.lambda_d, "rkd_a": p.lambda_a}),
}


def _combine(*parts: Weights) -> Weights:
    def weights(p: MethodParams) -> dict[str, float]:
        out: dict[str, float] = {}
        for part in parts:
            out.update(part(p))
        return out

    return weights


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method to the registry: the workflow, the config check and the tables then know it."""
    unknown = set(method.weights(MethodParams())) - set(TERM_NEEDS)
    if unknown:
        raise NoiseKDError(f"method {method.name} names unknown loss terms {sorted(unknown)}; known: "
                           f"{sorted(TERM_NEEDS)}")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise NoiseKDError(f"unknown method {name!r}; known methods: {', '.join(sorted(METHODS))}") from None


register(Method("baseline", "Baseline", "Student trained alone with cross-entropy", _ce))
register(Method("ga", "GA", "Gaussian augmentation: CE on x + N(0, sigma^2), no teacher", _ce,
                student_input="gaussian", paper_params=("sigma",)))
register(Method("hinton", "Hinton", "Hinton et al. knowledge distillation (Eq. 1)", _hinton, teacher=True))
register(Method("ft", "FT", "Fickle Teacher: Hinton KD from a dropout teacher whose dropout stays active",
                _hinton, teacher=True, fickle_teacher=True, paper_params=("dropout",)))
register(Method("sr", "SR", "Soft Randomization: student on x + N(0, sigma^2), teacher on clean x (Eq. 2)",
                _hinton, student_input="gaussian", teacher=True, paper_params=("sigma",)))
register(Method("mc", "MC", "Messy Collaboration: Hinton KD with targets re-drawn per batch with rate r",
                _hinton, teacher=True, relabel=True, paper_params=("mc_rate",)))
register(Method("noisy_teacher", "Noisy Teacher (L2)", "Sau & Balasubramanian: L2 logit regression on z * (1 + xi)",
                lambda p: {"logit_l2": 1.0}, teacher=True, perturb_teacher_logits=True,
                paper_params=("nt_sigma", "nt_rate")))
register(Method("noisy_teacher_kl", "Noisy Teacher (KL)", "Noisy Teacher with Hinton's KL objective instead of the L2 loss",
                _hinton, teacher=True, perturb_teacher_logits=True, paper_params=("nt_sigma", "nt_rate")))
register(Method("feature_mimicry", "Feature mimicry",
                "Hong et al.: CE on noisy input + MSE(student(x + n), teacher(x)) features",
                lambda p: {"ce": 1.0, "fm": p.lambda_fm}, student_input="gaussian", teacher=True,
                paper_params=("sigma",)))
for _key, (_label, _desc, _extra) in FEATURE_METHODS.items():
    register(Method(_key, _label, _desc, _combine(_ce, _extra), teacher=True))
    register(Method(f"{_key}+hinton", f"{_label}+H", f"{_desc} + Hinton KD", _combine(_hinton, _extra), teacher=True))
    register(Method(f"{_key}+ft", f"{_label}+FT", f"{_desc} + Fickle Teacher", _combine(_hinton, _extra), teacher=True,
                    fickle_teacher=True, paper_params=("dropout",)))
