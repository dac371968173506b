"""When does clean-to-noisy feature-based student-teacher learning help?  A deep-linear study.

Hong, Mao, Lin & Chan (CVPR 2021) claim that a student trained on noisy inputs x + n while matching
a clean-input teacher's hidden features T1·x benefits only when three factors are controlled:
(1) the student is *not* trained to zero training loss, (2) the teacher is knowledgeable on the
clean problem, (3) the teacher decomposes its knowledge well in its hidden features.  This module
measures each factor with two-layer linear networks on synthetic data of known structure, in a few
seconds on one CPU core.  It reports what the data show; nothing here is tuned toward the claim.

Problem (one per seed; every sample as a row):
- x = U·s with U a d×k orthonormal basis (QR of a Gaussian), s ~ N(0, I_k); the student's labels
  y = A·x with A ~ N(0, 1/k) entries (m×d, m < k), so each output has unit variance and the labels
  do not determine x.  The teacher's clean task is ȳ = Ā·x with Ā (`teacher_outputs` ≥ k rows, the
  first m of them A): it must represent the whole subspace, so it knows more than the labels.
  The student sees z = x + n,
  n ~ N(0, σ² I_d).  Student training set: `n_student` < d samples (over-parameterised: the noisy
  inputs span n_student dimensions, so the training loss can reach zero); a noisy validation set of
  `n_val` samples (early stopping only) and a fresh noisy test set of `n_test` samples (new x, new n).
- Test error: mean squared error per output on the test set, (1/(m·n_test))·Σ‖W2W1 z − y‖².  The
  expected error of a linear map M is known in closed form, (‖(M − A)U‖²_F + σ²‖M‖²_F)/m, and is
  reported beside it (`expected_test_error`); the best any linear map can do (E[y | z]) is
  σ²/(1+σ²)·‖AU‖²_F/m (method "oracle", metric `bayes_error`).

Teacher: T2·T1 (hidden width h ≥ k) trained by full-batch gradient descent from a small seeded init
on clean pairs (x, ȳ) drawn from the same problem (`n_teacher_many` or `n_teacher_few` < k samples)
until its training loss is below `teacher_tol` (or `teacher_steps`).

Student: W2·W1 (same hidden width as its teacher) trained by full-batch gradient descent from a
small seeded init (`init_scale`) on

    L(W1, W2) = (1/N) Σ_i ‖W2 W1 z_i − y_i‖² + λ (1/N) Σ_i ‖W1 z_i − T1 x_i‖²

with λ = `lam` (method "student_teacher") or λ = 0 (method "baseline").  The control "label_only"
uses the same loss towards Y·C, the hidden target fitted from the labels alone (C the least-squares
fit of T1·x on y over the training set): ST minus label-only is what the teacher's knowledge beyond
the labels does.  All methods of a seed share the data and the initial weights, so their differences
are paired.  Stopping rules:
- early-stopped (`early_stop="validation"`, default): train `val_window` steps and keep the iterate
  with the lowest validation error (checked every `eval_every` steps; the earliest on ties); each
  method gets its own best step.  `early_stop="fixed"`: stop after `early_steps` steps.
- zero loss: train until L < `zero_loss_tol` (at most `steps` steps; `reached_tol` says whether it
  was reached).  For the student-teacher method L includes the feature term.

Factors (`FACTORS`), each setting changing one thing from the reference (early-stopped student,
teacher on `n_teacher_many` samples, hidden width h, no re-mixing):
1. `training`: `early_stopped` vs `zero_loss`.
2. `teacher_knowledge`: `many_samples` vs `few_samples` (teacher learns only part of the subspace)
   vs `labels_only` (a teacher trained on the student's m labels alone: label-only equals ST).
3. `decomposition`: the reference teacher with its hidden layer re-mixed, T1 → B·T1, T2 → T2·B⁻¹
   (end-to-end function unchanged), B = P·diag(s)·Qᵀ with P, Q random orthogonal and s log-spaced
   from 1 to 1/`condition_number`, scaled so ‖B‖_F = √h (same feature energy as an orthogonal B):
   `orthogonal_mix` (condition number 1) and `ill_conditioned_mix`; and `wide_hidden`: a teacher
   of hidden width `wide_h` ≫ k trained like the reference, with a student of the same width.

Outputs of `run_study(config)`:
- results: tidy rows (factor, setting, method, seed, metric, value).  Methods "baseline",
  "label_only" and "student_teacher" carry test_error, expected_test_error, min_test_error (lowest test error along
  the trajectory, an oracle reference), final_train_loss (L at the kept iterate), final_fit_loss
  (its first term), stop_step and reached_tol (1.0 if L < zero_loss_tol at the kept iterate);
  method "teacher" carries clean_test_error (on its own task), train_loss, n_clean, hidden_width,
  outputs, label_r2 (share of its features' energy on the training inputs that the labels explain), mix_condition,
  function_gap (max |(T2'T1' − T2T1)U| against the reference teacher, so ~0 for a re-mix) and
  feature_change (‖T1'X − T1X‖_F/‖T1X‖_F on the student's clean training inputs; NaN for another
  width); method "oracle" carries bayes_error.  `results.attrs["config"]` holds the config.
- curves: (factor, setting, method, seed, step, test_error) every `eval_every` steps and at the last
  step, for the whole trajectory computed (the validation window, or until the zero-loss stop).

`study_table(results)` says per factor setting whether student-teacher beat the baseline (paired
over seeds, see `verdict`); `study_figure(curves)` draws the learning curves.  Everything is drawn
from `np.random.default_rng([seed, crc32(stream name)])`, so a seed gives bit-identical frames.

    python -m noisekd.linear_study --out results/linear_study
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import math
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .errors import NoiseKDError  # noqa: E402
from .linear_study_config import FACTORS, StudyConfig  # noqa: E402
from .noise import noisy_input  # noqa: E402
from .tables import Column, Row, Table, TableCell, write_figure, write_table  # noqa: E402

__all__ = [
    "FACTORS", "METHODS", "StudyConfig", "Problem", "make_problem", "student_loss", "student_gradients",
    "train_two_layer", "train_teacher", "remix_matrix", "remix", "expected_test_error", "bayes_error",
    "run_study", "verdict", "study_table", "study_figure", "StudyTable", "main",
]

METHODS = ("baseline", "label_only", "student_teacher")
STUDENT_METRICS = ("test_error", "expected_test_error", "min_test_error", "final_train_loss", "final_fit_loss",
                   "stop_step", "reached_tol")
RESULT_COLUMNS = ("factor", "setting", "method", "seed", "metric", "value")
CURVE_COLUMNS = ("factor", "setting", "method", "seed", "step", "test_error")


def _rng(seed: int, stream: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(stream.encode())])


# -- problem --------------------------------------------------------------------------------------


@dataclass
class Problem:
    """One seed's data; every matrix holds samples as rows."""

    U: np.ndarray  # d × k orthonormal
    A: np.ndarray  # m × d: the student's labels y = A·x
    A_teacher: np.ndarray  # teacher_outputs × d: the teacher's clean task, whose first m rows are A
    sigma: float
    X: np.ndarray  # clean training inputs, N × d
    Y: np.ndarray  # N × m
    Z: np.ndarray  # noisy training inputs
    X_val: np.ndarray
    Y_val: np.ndarray
    Z_val: np.ndarray
    X_test: np.ndarray
    Y_test: np.ndarray
    Z_test: np.ndarray

    def clean(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.standard_normal((n, self.U.shape[1])) @ self.U.T
        return x, x @ self.A.T

    def noisy(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x, y = self.clean(rng, n)
        return x, y, noisy_input(x, self.sigma, rng)  # the same input noise as the students' (Eq. 2)


def make_problem(config: StudyConfig, seed: int) -> Problem:
    rng = _rng(seed, "problem")
    q, r = np.linalg.qr(rng.standard_normal((config.d, config.k)))
    U = q * np.sign(np.diag(r))
    A_teacher = rng.standard_normal((config.teacher_outputs, config.d)) / math.sqrt(config.k)
    empty = np.empty((0, config.d))
    p = Problem(U, A_teacher[:config.m], A_teacher, config.sigma, *([empty] * 9))
    p.X, p.Y, p.Z = p.noisy(_rng(seed, "train"), config.n_student)
    p.X_val, p.Y_val, p.Z_val = p.noisy(_rng(seed, "val"), config.n_val)
    p.X_test, p.Y_test, p.Z_test = p.noisy(_rng(seed, "test"), config.n_test)
    return p


def expected_test_error(M: np.ndarray, U: np.ndarray, A: np.ndarray, sigma: float) -> float:
    """E‖M(x + n) − Ax‖²/m for x = Us, s ~ N(0, I), n ~ N(0, σ²I): (‖(M − A)U‖² + σ²‖M‖²)/m."""
    return float((np.sum(((M - A) @ U) ** 2) + sigma**2 * np.sum(M**2)) / A.shape[0])


def bayes_error(U: np.ndarray, A: np.ndarray, sigma: float) -> float:
    """Expected error per output of E[y | x + n] = AU·Uᵀz/(1 + σ²), the best of any predictor."""
    return float(sigma**2 / (1 + sigma**2) * np.sum((A @ U) ** 2) / A.shape[0])


# -- training -------------------------------------------------------------------------------------


def student_loss(W1, W2, inputs, targets, teacher_features=None, lam: float = 0.0) -> float:
    """(1/N) Σ ‖W2 W1 z_i − y_i‖² + lam (1/N) Σ ‖W1 z_i − t_i‖² with samples as rows."""
    F = np.asarray(inputs) @ np.asarray(W1).T
    R = F @ np.asarray(W2).T - targets
    n = F.shape[0]
    loss = float(np.sum(R * R) / n)
    if lam:
        D = F - teacher_features
        loss += lam * float(np.sum(D * D) / n)
    return loss


def student_gradients(W1, W2, inputs, targets, teacher_features=None, lam: float = 0.0):
    """(loss, fit term, dL/dW1, dL/dW2) of `student_loss`."""
    n = inputs.shape[0]
    F = inputs @ W1.T
    R = F @ W2.T - targets
    fit = float(np.sum(R * R) / n)
    g2 = (2.0 / n) * R.T @ F
    G = R @ W2
    loss = fit
    if lam:
        D = F - teacher_features
        loss += lam * float(np.sum(D * D) / n)
        G = G + lam * D
    g1 = (2.0 / n) * G.T @ inputs
    return loss, fit, g1, g2


@dataclass
class Run:
    """A trained two-layer linear network and its trajectory."""

    W1: np.ndarray
    W2: np.ndarray
    steps: np.ndarray  # evaluated steps
    test_errors: np.ndarray  # test error at those steps (NaN where no test set was given)
    stop_step: int  # the step of the kept iterate
    loss: float  # training objective of the kept iterate
    fit: float  # its data term
    test_error: float
    reached_tol: bool
    extra: dict = field(default_factory=dict)


def _mse(M: np.ndarray, Z: np.ndarray, Y: np.ndarray) -> float:
    R = Z @ M.T - Y
    return float(np.sum(R * R) / R.size)


def train_two_layer(W1, W2, inputs, targets, *, lr: float, max_steps: int, teacher_features=None, lam: float = 0.0,
                    tol: float | None = None, val: tuple[np.ndarray, np.ndarray] | None = None,
                    test: tuple[np.ndarray, np.ndarray] | None = None, eval_every: int = 5, who: str = "run") -> Run:
    """Full-batch gradient descent on `student_loss`.

    Stops at `max_steps`, or as soon as the loss is below `tol`.  With `val`, the kept iterate is the
    one of lowest validation error among the evaluated steps (every `eval_every` steps and the last);
    otherwise the last.  With `test`, the test error is recorded at every evaluated step.
    """
    W1, W2 = np.array(W1, dtype=np.float64), np.array(W2, dtype=np.float64)
    steps, errs = [], []
    best = None  # (val error, step, W1, W2, loss, fit, test error)
    t = 0
    while True:
        loss, fit, g1, g2 = student_gradients(W1, W2, inputs, targets, teacher_features, lam)
        if not math.isfinite(loss) or loss > 1e12:
            raise NoiseKDError(f"{who}: gradient descent diverged at step {t} (loss {loss:.3g}); lower the step size")
        done = t >= max_steps or (tol is not None and loss < tol)
        if t % eval_every == 0 or done:
            M = W2 @ W1
            err = _mse(M, *test) if test is not None else float("nan")
            steps.append(t)
            errs.append(err)
            if val is not None:
                v = _mse(M, *val)
                if best is None or v < best[0]:
                    best = (v, t, W1.copy(), W2.copy(), loss, fit, err)
        if done:
            break
        W1 -= lr * g1
        W2 -= lr * g2
        t += 1
    if best is None:
        best = (float("nan"), t, W1, W2, loss, fit, errs[-1])
    _, step, bW1, bW2, bloss, bfit, berr = best
    return Run(bW1, bW2, np.array(steps), np.array(errs), int(step), float(bloss), float(bfit), float(berr),
               bool(tol is not None and bloss < tol), {"last_step": t, "last_loss": float(loss)})


def _init(config: StudyConfig, seed: int, h: int, stream: str, outputs: int | None = None):
    rng = _rng(seed, f"{stream}/h{h}")
    return (config.init_scale * rng.standard_normal((h, config.d)),
            config.init_scale * rng.standard_normal((outputs or config.m, h)))


def teacher_task(problem: Problem, outputs: str) -> np.ndarray:
    """The teacher's clean targets are `task @ x`: the full task ("full") or the student's labels alone ("labels")."""
    return problem.A_teacher if outputs == "full" else problem.A


def train_teacher(config: StudyConfig, problem: Problem, seed: int, n: int, h: int, outputs: str = "full") -> Run:
    """A two-layer linear teacher trained on n clean pairs of its task; `test_error` is its clean test error."""
    task = teacher_task(problem, outputs)
    X, _ = problem.clean(_rng(seed, f"teacher_data/n{n}"), n)
    W1, W2 = _init(config, seed, h, f"teacher_init/n{n}/{outputs}", outputs=task.shape[0])
    return train_two_layer(W1, W2, X, X @ task.T, lr=config.teacher_lr, max_steps=config.teacher_steps,
                           tol=config.teacher_tol, test=(problem.X_test, problem.X_test @ task.T),
                           eval_every=max(config.teacher_steps, 1),
                           who=f"teacher (seed {seed}, {n} clean samples, width {h}, {outputs} task)")


def label_only_target(labels: np.ndarray, features: np.ndarray) -> np.ndarray:
    """The hidden target fitted from the labels alone: Y·C with C = argmin ‖Y·C − F‖ (least squares).

    It is the part of the teacher's features that the labels already determine; a student trained
    towards it gets everything the teacher offers except what the teacher knows beyond the labels.
    """
    C = np.linalg.lstsq(labels, features, rcond=None)[0]
    return labels @ C


def label_r2(labels: np.ndarray, features: np.ndarray) -> float:
    """Fraction of the features' energy that a linear function of the labels explains (1: the labels suffice)."""
    residual = features - label_only_target(labels, features)
    return float(1.0 - np.sum(residual**2) / np.sum(features**2))


def remix_matrix(h: int, condition_number: float, rng: np.random.Generator) -> np.ndarray:
    """B = P diag(s) Qᵀ, P and Q Haar-orthogonal, s log-spaced from 1 to 1/condition_number, ‖B‖_F = √h."""
    def haar(n):
        q, r = np.linalg.qr(rng.standard_normal((n, n)))
        return q * np.sign(np.diag(r))

    s = np.logspace(0.0, -math.log10(condition_number), h) if h > 1 else np.ones(1)
    B = haar(h) @ np.diag(s) @ haar(h).T
    return B * (math.sqrt(h) / np.linalg.norm(B))


def remix(T1: np.ndarray, T2: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B·T1, T2·B⁻¹): the same end-to-end map with the hidden layer re-mixed."""
    return B @ T1, np.linalg.solve(B.T, T2.T).T


# -- the study --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Setting:
    factor: str
    setting: str
    teacher: str  # "many" or "few"
    outputs: str  # the teacher's task: "full" or "labels"
    h: int
    mix: float | None  # condition number of B, None for no re-mix
    regime: str  # "early" or "zero"


def _settings(config: StudyConfig) -> list[_Setting]:
    table = {
        ("training", "early_stopped"): ("many", "full", config.h, None, "early"),
        ("training", "zero_loss"): ("many", "full", config.h, None, "zero"),
        ("teacher_knowledge", "many_samples"): ("many", "full", config.h, None, "early"),
        ("teacher_knowledge", "few_samples"): ("few", "full", config.h, None, "early"),
        ("teacher_knowledge", "labels_only"): ("many", "labels", config.h, None, "early"),
        ("decomposition", "orthogonal_mix"): ("many", "full", config.h, 1.0, "early"),
        ("decomposition", "ill_conditioned_mix"): ("many", "full", config.h, config.condition_number, "early"),
        ("decomposition", "wide_hidden"): ("many", "full", config.wide_h, None, "early"),
    }
    return [_Setting(f, s, *table[(f, s)]) for f in config.factors for s in FACTORS[f]]


def _student(config: StudyConfig, problem: Problem, W0, target, lam: float, regime: str, who: str) -> Run:
    common = dict(teacher_features=target, lam=lam, test=(problem.Z_test, problem.Y_test), eval_every=config.eval_every,
                  lr=config.lr, who=who)
    if regime == "zero":
        return train_two_layer(*W0, problem.Z, problem.Y, max_steps=config.steps, tol=config.zero_loss_tol, **common)
    if config.early_stop == "fixed":
        return train_two_layer(*W0, problem.Z, problem.Y, max_steps=config.early_steps, **common)
    return train_two_layer(*W0, problem.Z, problem.Y, max_steps=config.val_window, val=(problem.Z_val, problem.Y_val),
                           **common)


@contextlib.contextmanager
def _one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        yield
        return
    with threadpool_limits(1):
        yield


def _teacher_metrics(config: StudyConfig, problem: Problem, st: _Setting, T: Run, T1, T2, ref: Run,
                     mix_condition: float) -> dict:
    task = teacher_task(problem, st.outputs)
    feat, ref_feat = problem.X @ T1.T, problem.X @ ref.W1.T
    same_task = T2.shape == ref.W2.shape
    return {
        "clean_test_error": _mse(T2 @ T1, problem.X_test, problem.X_test @ task.T),
        "train_loss": T.loss,
        "n_clean": float(config.n_teacher_many if st.teacher == "many" else config.n_teacher_few),
        "hidden_width": float(st.h),
        "outputs": float(task.shape[0]),
        "mix_condition": mix_condition,
        "function_gap": float(np.max(np.abs((T2 @ T1 - ref.W2 @ ref.W1) @ problem.U))) if same_task else float("nan"),
        "feature_change": float(np.linalg.norm(feat - ref_feat) / np.linalg.norm(ref_feat))
        if feat.shape == ref_feat.shape else float("nan"),
        "label_r2": label_r2(problem.Y, feat),
    }


def _seed_rows(config: StudyConfig, seed: int, rows: list, curves: list) -> None:
    problem = make_problem(config, seed)
    teachers: dict[tuple, Run] = {}
    students: dict[tuple, Run] = {}

    def teacher(kind: str, h: int, outputs: str) -> Run:
        if (kind, h, outputs) not in teachers:
            n = config.n_teacher_many if kind == "many" else config.n_teacher_few
            teachers[(kind, h, outputs)] = train_teacher(config, problem, seed, n, h, outputs)
        return teachers[(kind, h, outputs)]

    ref = teacher("many", config.h, "full")
    oracle = bayes_error(problem.U, problem.A, problem.sigma)
    for st in _settings(config):
        T = teacher(st.teacher, st.h, st.outputs)
        T1, T2, mix_condition = T.W1, T.W2, 1.0
        if st.mix is not None:
            B = remix_matrix(st.h, st.mix, _rng(seed, f"remix/{st.mix!r}"))
            T1, T2, mix_condition = *remix(T1, T2, B), float(np.linalg.cond(B))
        base = (st.factor, st.setting)
        tinfo = _teacher_metrics(config, problem, st, T, T1, T2, ref, mix_condition)
        rows += [(*base, "teacher", seed, k, v) for k, v in tinfo.items()]
        rows.append((*base, "oracle", seed, "bayes_error", oracle))
        feat = problem.X @ T1.T
        targets = {"baseline": None, "label_only": label_only_target(problem.Y, feat), "student_teacher": feat}
        W0 = _init(config, seed, st.h, "student_init")
        for method in METHODS:
            lam = 0.0 if method == "baseline" else config.lam
            key = (st.h, st.regime) + ((method, st.teacher, st.outputs, st.mix) if lam else ())
            if key not in students:
                who = f"student ({method}, {st.factor}/{st.setting}, seed {seed})"
                students[key] = _student(config, problem, W0, targets[method], lam, st.regime, who)
            run = students[key]
            M = run.W2 @ run.W1
            metrics = {
                "test_error": run.test_error,
                "expected_test_error": expected_test_error(M, problem.U, problem.A, problem.sigma),
                "min_test_error": float(np.nanmin(run.test_errors)),
                "final_train_loss": run.loss,
                "final_fit_loss": run.fit,
                "stop_step": float(run.stop_step),
                "reached_tol": float(run.loss < config.zero_loss_tol),
            }
            rows += [(*base, method, seed, k, v) for k, v in metrics.items()]
            curves.append(pd.DataFrame({"factor": st.factor, "setting": st.setting, "method": method, "seed": seed,
                                        "step": run.steps, "test_error": run.test_errors}))


def run_study(config: StudyConfig | Mapping[str, Any] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run every factor setting for every seed; returns (results, curves), see the module docstring."""
    if not isinstance(config, StudyConfig):
        config = StudyConfig.from_dict(config)
    rows: list[tuple] = []
    curves: list[pd.DataFrame] = []
    with _one_blas_thread(), np.errstate(over="ignore", invalid="ignore"):
        for seed in config.seeds:
            _seed_rows(config, int(seed), rows, curves)
    results = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    results["seed"] = results["seed"].astype("int64")
    results["value"] = results["value"].astype("float64")
    curve_frame = pd.concat(curves, ignore_index=True)[list(CURVE_COLUMNS)]
    curve_frame["seed"] = curve_frame["seed"].astype("int64")
    curve_frame["step"] = curve_frame["step"].astype("int64")
    results.attrs["config"] = dataclasses.asdict(config)
    curve_frame.attrs["config"] = dataclasses.asdict(config)
    return results, curve_frame


# -- table ------------------------------------------------------------------------------------------

FACTOR_LABELS = {"training": "1. Student training", "teacher_knowledge": "2. Teacher knowledge",
                 "decomposition": "3. Teacher's hidden decomposition"}


def _setting_label(factor: str, setting: str, teacher: Mapping[str, float], cfg: Mapping[str, Any]) -> str:
    n = int(teacher.get("n_clean", float("nan"))) if math.isfinite(teacher.get("n_clean", float("nan"))) else None
    h = int(teacher["hidden_width"]) if math.isfinite(teacher.get("hidden_width", float("nan"))) else None
    if setting == "early_stopped":
        if cfg.get("early_stop") == "fixed":
            return f"Early-stopped ({cfg.get('early_steps')} steps)"
        return "Early-stopped (best validation step)"
    if setting == "zero_loss":
        tol = cfg.get("zero_loss_tol")
        return f"Trained to zero loss (< {tol:.0e})" if tol is not None else "Trained to zero loss"
    if setting in ("many_samples", "few_samples"):
        return f"Teacher on {n} clean samples" if n is not None else setting.replace("_", " ")
    if setting == "labels_only":
        return f"Teacher trained on the labels alone ({n} samples)" if n is not None else "Teacher on the labels alone"
    if setting == "orthogonal_mix":
        return "Re-mixed, orthogonal B"
    if setting == "ill_conditioned_mix":
        c = teacher.get("mix_condition", float("nan"))
        return f"Re-mixed, ill-conditioned B (cond {c:.0e})" if math.isfinite(c) else "Re-mixed, ill-conditioned B"
    if setting == "wide_hidden":
        return f"Over-wide hidden layer (h={h})" if h is not None else "Over-wide hidden layer"
    return setting


def verdict(diffs: np.ndarray, baseline_mean: float, min_rel: float = 0.01) -> str:
    """Student-teacher vs baseline from the paired differences baseline − ST (one per seed).

    "ST succeeds" when the mean difference exceeds the seeds' spread of the differences (sample std,
    0 for one seed) and at least `min_rel` of the baseline's mean; "ST fails (worse)" symmetrically;
    "negligible" when beyond the spread but smaller than `min_rel`; else "within seed spread".
    """
    diffs = np.asarray(diffs, dtype=float)
    if diffs.size == 0 or not np.all(np.isfinite(diffs)):
        return "n/a"
    mean = float(diffs.mean())
    sd = float(diffs.std(ddof=1)) if diffs.size > 1 else 0.0
    if abs(mean) <= sd or mean == 0:
        return "within seed spread"
    if abs(mean) < min_rel * abs(baseline_mean):
        return f"negligible (< {100 * min_rel:g}%)"
    return "ST succeeds" if mean > 0 else "ST fails (worse)"


@dataclass
class _Text(TableCell):
    """A table cell with its own display text and raw CSV fields."""

    shown: str = "-"
    fields: tuple[tuple[str, Any], ...] = ()

    def text(self) -> str:
        return self.shown


class StudyTable(Table):
    """`noisekd.tables.Table` whose CSV holds the raw numbers (MSE, not percent) under snake_case names:
    factor, setting, then each column's fields: teacher_clean_mse_mean/std, label_r2, baseline_mse_mean/std,
    label_only_mse_mean/std, st_mse_mean/std; effect_mean/std/relative (baseline - ST, relative to the
    baseline mean), effect_st_wins, effect_verdict; the same with prefix effect_vs_label_only (label-only -
    ST); baseline/label_only/student_teacher_stop_step and n_seeds."""

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        head = [name.lower() for name in self.index_names]
        for cell in self.rows[0].cells if self.rows else []:
            head += [name for name, _ in cell.fields]
        w.writerow(head)
        for row in self.rows:
            line = list(row.index)
            for cell in row.cells:
                line += [_csv_value(v) for _, v in cell.fields]
            w.writerow(line)
        return buf.getvalue()


def _csv_value(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if not math.isfinite(v) else f"{float(v):.6g}"
    return str(v)


def _pm(values: np.ndarray, fmt: str = ".3f") -> str:
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return "n/a"
    if values.size == 1:
        return format(values.mean(), fmt)
    return f"{format(values.mean(), fmt)} ± {format(values.std(ddof=1), fmt.replace('+', ''))}"


def _mean_sd(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return float("nan"), float("nan")
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else float("nan")


def _comparison(prefix: str, ref: np.ndarray, st: np.ndarray, min_rel: float) -> tuple[list[_Text], str]:
    """Cells (Δ, relative Δ, wins, verdict) of ST against a reference method, paired per seed."""
    diff = ref - st
    ref_mean, _ = _mean_sd(ref)
    d_mean, d_sd = _mean_sd(diff)
    rel = d_mean / ref_mean if ref_mean else float("nan")
    wins = int(np.sum(diff > 0))
    v = verdict(diff, ref_mean, min_rel)
    return [
        _Text(shown=f"{_pm(diff, '+.3f')} ({100 * rel:+.1f}%)" if math.isfinite(rel) else "n/a",
              fields=((f"{prefix}_mean", d_mean), (f"{prefix}_std", d_sd), (f"{prefix}_relative", rel))),
        _Text(shown=f"{wins}/{diff.size}", fields=((f"{prefix}_st_wins", wins),)),
        _Text(shown=v, fields=((f"{prefix}_verdict", v),)),
    ], v


def _errors_cell(name: str, values: np.ndarray) -> _Text:
    mean, sd = _mean_sd(values)
    return _Text(shown=_pm(values), fields=((f"{name}_mse_mean", mean), (f"{name}_mse_std", sd)))


def _study_row(f: str, s: str, sub: pd.DataFrame, cfg: Mapping[str, Any], min_rel: float) -> tuple[Row, int]:
    def col(method, metric):
        key = (method, metric)
        return sub[key].to_numpy(dtype=float) if key in sub.columns else np.full(len(sub), np.nan)

    errors = {m: col(m, "test_error") for m in METHODS}
    ok = np.logical_and.reduce([np.isfinite(v) for v in errors.values()])
    b, lo, t = (errors[m][ok] for m in METHODS)
    teacher = {m: float(np.nanmean(col("teacher", m))) if np.isfinite(col("teacher", m)).any() else float("nan")
               for m in ("n_clean", "hidden_width", "mix_condition", "label_r2")}
    tc = col("teacher", "clean_test_error")
    tc = tc[np.isfinite(tc)]
    tc_mean, tc_sd = _mean_sd(tc)
    vs_base, v_base = _comparison("effect", b, t, min_rel)
    vs_labels, v_labels = _comparison("effect_vs_label_only", lo, t, min_rel)
    r2 = teacher["label_r2"]
    stops = "/".join(f"{np.nanmean(col(m, 'stop_step')):.0f}" for m in METHODS)
    cells = [
        _Text(shown=_pm(tc, ".2e") if tc.size else "-",
              fields=(("teacher_clean_mse_mean", tc_mean), ("teacher_clean_mse_std", tc_sd))),
        _Text(shown=f"{r2:.2f}" if math.isfinite(r2) else "-", fields=(("label_r2", r2),)),
        _errors_cell("baseline", b), _errors_cell("label_only", lo), _errors_cell("st", t),
        *vs_base, *vs_labels,
        _Text(shown=stops, fields=tuple((f"{m}_stop_step", float(np.nanmean(col(m, "stop_step")))) for m in METHODS)
              + (("n_seeds", int(ok.sum())),)),
    ]
    for v, ref_cell in ((v_base, 2), (v_labels, 3)):  # bold: the better of each pair with a clear verdict
        if v in ("ST succeeds", "ST fails (worse)"):
            cells[4 if v == "ST succeeds" else ref_cell].bold = True
    return Row((FACTOR_LABELS.get(f, f), _setting_label(f, s, teacher, cfg)), cells), int(ok.sum())


def study_table(results: pd.DataFrame, min_rel: float = 0.01) -> StudyTable:
    """Per factor setting: teacher, baseline, label-only and ST test errors, ST's paired effects and verdicts."""
    if not isinstance(results, pd.DataFrame):
        raise NoiseKDError(f"study_table: expected a results DataFrame, got {type(results).__name__}")
    missing = [c for c in RESULT_COLUMNS if c not in results.columns]
    if missing:
        raise NoiseKDError(f"study_table: results lack column(s) {missing}")
    cfg = results.attrs.get("config", {}) or {}
    wide = results.pivot_table(index=["factor", "setting", "seed"], columns=["method", "metric"], values="value",
                               aggfunc="first", sort=False)
    order = [(f, s) for f in FACTORS for s in FACTORS[f]]
    present = list(dict.fromkeys((f, s) for f, s, _ in wide.index))
    order = [p for p in order if p in present] + [p for p in present if p not in order]
    rows, n_seeds = [], set()
    for f, s in order:
        row, n = _study_row(f, s, wide.loc[(f, s)], cfg, min_rel)
        rows.append(row)
        n_seeds.add(n)
    columns = [Column("Teacher clean MSE"), Column("Labels explain"), Column("Baseline MSE"),
               Column("Label-only MSE"), Column("ST MSE"),
               Column("Δ", "ST vs baseline"), Column("ST wins", "ST vs baseline"), Column("Verdict", "ST vs baseline"),
               Column("Δ", "ST vs label-only"), Column("ST wins", "ST vs label-only"),
               Column("Verdict", "ST vs label-only"), Column("Stop step B/LO/ST")]
    return StudyTable("linear_study", "Clean-to-noisy student-teacher learning in deep linear networks",
                      _caption(results, cfg, n_seeds, min_rel), ("Factor", "Setting"), columns, rows)


def _caption(results: pd.DataFrame, cfg: Mapping[str, Any], n_seeds: set, min_rel: float) -> str:
    oracle = results.loc[(results["method"] == "oracle") & (results["metric"] == "bayes_error"), "value"]
    seeds = "/".join(str(n) for n in sorted(n_seeds)) or "0"
    parts = [
        f"Deep linear networks (two layers), noisy student vs clean teacher; mean ± std over {seeds} seeds of the "
        "test MSE per output on fresh noisy inputs (new x, new noise).",
        "ST: student-teacher loss (fit + lam times the feature match to the clean teacher's hidden layer T1·x); "
        "baseline: lam = 0; label-only control: the same loss towards the hidden target fitted from the labels "
        "alone (least squares of T1·x on y over the training set), so ST vs label-only is what the teacher knows "
        "beyond the labels.  'Labels explain': the share of the teacher's feature energy that this fit captures.",
        "All methods of a seed share data and initialisation, so Δ (reference minus ST; positive: ST better, "
        "relative to the reference in brackets) is paired per seed.",
        f"Verdict: 'ST succeeds' if mean Δ exceeds the seeds' std of Δ and {100 * min_rel:g}% of the reference "
        "error, 'ST fails (worse)' symmetrically, 'negligible' if beyond the spread but below that size, "
        "otherwise 'within seed spread'; the better of the pair is bold.",
    ]
    if cfg:
        parts.append(f"d={cfg.get('d')}, k={cfg.get('k')}, m={cfg.get('m')} labels, h={cfg.get('h')}, "
                     f"teacher task of {cfg.get('teacher_outputs')} outputs, sigma={cfg.get('sigma')}, "
                     f"N={cfg.get('n_student')} noisy training samples, lam={cfg.get('lam')}, lr={cfg.get('lr')}.")
    if len(oracle):
        parts.append(f"Best linear predictor (Bayes) error {oracle.mean():.3f}; predicting 0 gives about 1.")
    return " ".join(parts)


# -- figure ------------------------------------------------------------------------------------------

PANEL_W, PANEL_H = 4.2, 3.3


def _band(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std over seeds per step; a seed that stopped early keeps its last value (its model is fixed)."""
    wide = frame.pivot_table(index="step", columns="seed", values="test_error", aggfunc="first").sort_index().ffill()
    std = wide.std(axis=1, ddof=1) if wide.shape[1] > 1 else wide.iloc[:, 0] * 0.0
    return wide.index.to_numpy(), wide.mean(axis=1).to_numpy(), std.fillna(0.0).to_numpy()


def study_figure(curves: pd.DataFrame, results: pd.DataFrame | None = None) -> Figure:
    """Test error vs gradient step, one panel per factor: baseline (dashed), label-only (dotted), ST (solid).

    Mean ± std over seeds as bands; settings by colour.  Curves that coincide (e.g. the early-stopped
    and zero-loss runs share their trajectory up to the early stop) stay visible: each later setting
    is drawn thinner on top.  With `results`, markers show the kept iterates (mean stop step and mean
    test error) and a dotted line the Bayes error.
    """
    if not isinstance(curves, pd.DataFrame):
        raise NoiseKDError(f"study_figure: expected a curves DataFrame, got {type(curves).__name__}")
    missing = [c for c in CURVE_COLUMNS if c not in curves.columns]
    if missing:
        raise NoiseKDError(f"study_figure: curves lack column(s) {missing}")
    from matplotlib.lines import Line2D

    cfg = curves.attrs.get("config", {}) or {}
    factors = [f for f in FACTORS if f in set(curves["factor"])] + sorted(set(curves["factor"]) - set(FACTORS))
    teacher_info: dict[tuple[str, str], dict] = {}
    if results is not None:
        tr = results.loc[results["method"] == "teacher"]
        teacher_info = {k: g.groupby("metric")["value"].mean().to_dict() for k, g in tr.groupby(["factor", "setting"])}
    palette = sns.color_palette("colorblind")
    styles = {"baseline": ("--", "s", "baseline (lam = 0)"), "label_only": (":", "^", "label-only control"),
              "student_teacher": ("-", "o", "student-teacher")}
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.0):
        n = max(len(factors), 1)
        fig, axes = plt.subplots(1, n, figsize=(PANEL_W * n, PANEL_H + 0.9), layout="constrained", squeeze=False)
        axes = list(axes[0])
        if not factors:
            axes[0].set_axis_off()
            axes[0].text(0.5, 0.5, "No learning curves.", ha="center", va="center", transform=axes[0].transAxes)
            return fig
        for ax, f in zip(axes, factors):
            sub = curves.loc[curves["factor"] == f]
            settings = [s for s in FACTORS.get(f, ()) if s in set(sub["setting"])]
            settings += sorted(set(sub["setting"]) - set(settings))
            handles = []
            for i, s in enumerate(settings):
                color = palette[i % len(palette)]
                lw = 1.2 + 1.6 * (len(settings) - 1 - i) / max(len(settings) - 1, 1)
                handles.append(Line2D([], [], color=color, lw=2.5,
                                      label=_setting_label(f, s, teacher_info.get((f, s), {}), cfg)))
                for method, (ls, marker, _) in styles.items():
                    part = sub.loc[(sub["setting"] == s) & (sub["method"] == method)]
                    if part.empty:
                        continue
                    x, mean, std = _band(part)
                    keep = x > 0  # log axis
                    ax.plot(x[keep], mean[keep], ls=ls, color=color, lw=lw, alpha=0.9, zorder=2 + i)
                    ax.fill_between(x[keep], (mean - std)[keep], (mean + std)[keep], color=color, alpha=0.1, lw=0,
                                    zorder=1)
                    if results is not None:
                        r = results.loc[(results["factor"] == f) & (results["setting"] == s)
                                        & (results["method"] == method)]
                        stop = r.loc[r["metric"] == "stop_step", "value"].mean()
                        err = r.loc[r["metric"] == "test_error", "value"].mean()
                        if math.isfinite(stop) and math.isfinite(err) and stop > 0:
                            ax.plot([stop], [err], marker=marker, ms=6, color=color, mec="black", mew=0.7, ls="none",
                                    zorder=20)
            handles += [Line2D([], [], color="black", ls=ls, marker=marker if results is not None else None, ms=5,
                               mfc="white", mec="black", lw=1.2, label=label + (" (marker: kept iterate)"
                                                                                if results is not None else ""))
                        for ls, marker, label in styles.values()]
            if results is not None:
                bayes = results.loc[(results["factor"] == f) & (results["metric"] == "bayes_error"), "value"].mean()
                if math.isfinite(bayes):
                    ax.axhline(bayes, color="grey", ls=":", lw=1.2, zorder=1)
                    handles.append(Line2D([], [], color="grey", ls=":", lw=1.2, label="Bayes error (best predictor)"))
            ax.set_xscale("log")
            ax.set_xlabel("Gradient step (log scale)")
            ax.set_ylabel("Test MSE on fresh noisy inputs")
            ax.set_title(FACTOR_LABELS.get(f, f))
            ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=7, frameon=False,
                      ncol=1)
        fig.suptitle("Learning curves, mean ± std over seeds (bands)", fontsize=9)
    return fig


# -- command line -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m noisekd.linear_study", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/linear_study", help="folder for the table and figure")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a StudyConfig field (VALUE parsed as YAML), repeatable")
    args = parser.parse_args(argv)
    import yaml

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise NoiseKDError(f"--set {item!r}: expected KEY=VALUE")
        overrides[key.strip()] = yaml.safe_load(value)
    config = StudyConfig.from_dict(overrides)
    t0 = time.perf_counter()
    results, curves = run_study(config)
    wall = time.perf_counter() - t0
    out = Path(args.out)
    table = study_table(results)
    write_table(table, out / "linear_study.md", out / "linear_study.tex", out / "linear_study.csv")
    write_figure(study_figure(curves, results), out / "linear_study.png", out / "linear_study.pdf")
    results.to_csv(out / "linear_study_results.csv", index=False)
    curves.to_csv(out / "linear_study_curves.csv", index=False)
    print(table.to_markdown())
    print(f"wall time {wall:.1f} s; files in {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
