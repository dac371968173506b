"""White-box l-infinity PGD (Madry et al., 2018) and the paper's robust-accuracy protocol.

Images live in [0, 1]; models take them as they are (normalisation is inside the model, see
`noisekd.models`) and return logits.

Conventions, decided once here and used everywhere:

* Attack step.  From a start point x0 (the clean image, or with `random_start` a uniform draw from
  the eps-ball clamped to [0, 1]), each of `steps` iterations does
  ``x <- x + step_size * sign(grad_x CE(model(x), y))`` and then projects onto the eps-ball around
  the clean image (``delta = clamp(x - x_clean, -eps, eps)``) and onto [0, 1]
  (``x = clamp(x_clean + delta, 0, 1)``) -- the same arithmetic as torchattacks' PGD, so with
  ``random_start=False, early_stop=False, restarts=1`` the two give the same images.
  The loss is summed over the batch, not averaged: the sign of each sample's gradient is then
  independent of which other samples share the batch (torchattacks averages, which only rescales
  the gradient by 1/N and leaves the signs alone).

* What counts as "fooled" (one restart, one sample).
  - ``early_stop=True`` (default): the sample is fooled if ANY evaluated iterate x_0, ..., x_T
    (start point included) is misclassified.  As soon as that happens it is frozen at that
    misclassified iterate and dropped from further forwards/backwards.  This is the stronger
    attack and the convention of modern evaluations (AutoAttack keeps any adversarial point it
    finds); it is never weaker than the final-iterate rule on the same trajectory, because a
    trajectory whose final iterate fools the model has some fooling iterate.
  - ``early_stop=False``: the classic final-iterate convention (Madry et al.'s evaluation, the
    torchattacks attack): every sample runs all `steps` and is fooled iff x_T is misclassified;
    the returned image is x_T.
  The T forwards that produce the gradients (on x_0 .. x_{T-1}) also classify those iterates, so
  the any-iterate rule costs nothing extra; one gradient-free forward classifies x_T.  Freezing
  does not change any per-restart outcome under the any-iterate rule (a frozen pair is already
  fooled, whatever later iterates would do), so per-run accuracies are those of the unfrozen
  any-iterate attack.  ``early_stop=False`` is exactly the final-iterate rule.  (Trajectories are
  per-sample computations; only floating-point rounding can depend on the batch composition.)

* Restarts.  A sample is robust only if every restart fails (per-sample worst case).  `pgd` returns,
  per sample, the image of a restart that fooled the model if any did (the lowest-numbered of those
  that had fooled it when the sample stopped), else the last restart's image.  Freezing a fooled
  sample changes nothing in this worst-case answer as long as the fooling image is kept, which it
  is; `pgd` therefore also stops all other restarts of a sample once one restart has fooled it.
  `robust_accuracy` needs every restart's own outcome (for the per-run accuracies), so it only
  stops the (sample, restart) pair that was fooled.

* Randomness only from `generator` (a torch.Generator on x's device; None means a fresh one
  seeded 0).  The global RNG is never touched.  Random starts are drawn chunk by chunk, so for a
  fixed seed the images depend on `batch_size` as well; fix both for reproducibility.

* Execution.  The model runs in eval mode (every submodule's mode is restored afterwards), in
  fp32 with autocast disabled; gradients are taken with `torch.autograd.grad` w.r.t. the input
  only, so no parameter ever receives a `.grad` and `requires_grad` flags are left as they are.
  The restarts of a chunk of samples are concatenated along the batch dimension (at most
  `batch_size` (sample, restart) rows per forward).  Dropping fooled rows needs to know how many
  remain, which costs one host-device sync per step on CUDA (no `.item()` otherwise).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DEFAULT_BATCH_SIZE", "pgd", "robust_accuracy", "robust_accuracy_curve"]

# The paper's settings (eps 8/255, step size 0.003, 5 restarts, Tables 4 and 5) are the protocol's,
# in config.yaml (evaluation.pgd); these functions take them as arguments.

DEFAULT_BATCH_SIZE: int = 512
"""Default bound on (sample, restart) rows per forward/backward pass."""


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """Put every submodule in eval mode; restore each one's own previous mode afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _check_args(x, y, eps, step_size, steps, restarts, batch_size, generator):
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point image tensor in [0, 1], got {getattr(x, 'dtype', type(x))}")
    if x.dim() < 2:
        raise ValueError(f"x must have a batch dimension, got shape {tuple(x.shape)}")
    if not torch.is_tensor(y) or y.shape != x.shape[:1]:
        raise ValueError(f"y must be a label tensor of shape ({x.shape[0]},), got {getattr(y, 'shape', type(y))}")
    if y.is_floating_point() or y.is_complex():
        raise TypeError(f"y must hold integer class labels, got {y.dtype}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    if not (math.isfinite(step_size) and step_size >= 0):
        raise ValueError(f"step_size must be a finite number >= 0, got {step_size}")
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps}")
    if int(restarts) != restarts or restarts < 1:
        raise ValueError(f"restarts must be an integer >= 1, got {restarts}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size}")
    if generator is not None:
        gd, xd = torch.device(generator.device), x.device
        if gd.type != xd.type or (gd.index is not None and xd.index is not None and gd.index != xd.index):
            raise ValueError(f"generator is on {gd} but x is on {xd}")


def _default_generator(device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(0)
    return g


def _run_chunk(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step_size: float, steps: int, restarts: int,
    random_start: bool, generator: torch.Generator, early_stop: bool, stop_whole_sample: bool,
    record: tuple[int, ...] = (),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Attack one chunk of n samples with all its restarts batched together.

    Rows are restart-major: row r * n + i is restart r of sample i.  Returns the (R * n, ...) images
    each row ended at, the (R * n,) bool "fooled" flags under the module's convention, per row the
    index of the first iterate found misclassified (steps + 1 if none; without early stop every
    iterate is classified, so this is the any-iterate answer of the same trajectory), and per row
    and entry T of `record` whether x_T is misclassified (without early stop; empty otherwise).
    With `stop_whole_sample`, all rows of a sample stop once any of them is fooled (their flags
    then only say whether that row had been fooled when it stopped).
    """
    n = x.shape[0]
    clean = x.repeat(restarts, *([1] * (x.dim() - 1)))  # (R * n, ...)
    labels = y.repeat(restarts)
    if random_start:
        noise = torch.rand(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
        adv = (clean + (2 * noise - 1) * eps).clamp(0, 1)
    else:
        adv = clean.clone()

    out = adv.clone()  # final image of every row; frozen rows are written as they stop
    fooled = torch.zeros(restarts * n, dtype=torch.bool, device=x.device)
    # index t of the first iterate x_t seen misclassified, steps + 1 if none (early_stop: the
    # any-iterate rule, so the row is robust to PGD-T with this start iff fooled_at > T)
    fooled_at = torch.full((restarts * n,), steps + 1, dtype=torch.int64, device=x.device)
    idx = torch.arange(restarts * n, device=x.device)  # which rows are still being attacked
    # x_T misclassified, per row and recorded T (final-iterate rule at every T of one long run)
    wrong_at = torch.zeros(restarts * n, len(record) if not early_stop else 0, dtype=torch.bool, device=x.device)
    slot = {t: k for k, t in enumerate(record)} if not early_stop else {}

    for t in range(steps):
        if idx.numel() == 0:
            break
        adv.requires_grad_(True)
        logits = model(adv)
        loss = F.cross_entropy(logits, labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, adv)
        adv = adv.detach()
        if not early_stop:  # every row runs on: classify x_t from the forward the gradient needed
            wrong = logits.detach().argmax(1) != labels
            fooled_at = torch.where(wrong & (fooled_at > steps), t, fooled_at)
            if t in slot:
                wrong_at[:, slot[t]] = wrong
        else:
            wrong = logits.detach().argmax(1) != labels
            if stop_whole_sample:
                row_wrong = torch.zeros(restarts * n, dtype=torch.bool, device=x.device)
                row_wrong[idx] = wrong
                stop = row_wrong.view(restarts, n).any(0)[idx % n]
            else:
                stop = wrong
            keep = (~stop).nonzero().squeeze(1)  # the one sync per step, to shrink the batch
            if keep.numel() < idx.numel():
                # Freeze the stopping rows at this iterate (the one that fooled the model, or for a
                # sibling restart of a fooled sample, wherever it was).  Rows that go on are
                # overwritten later, so writing every active row is correct and avoids another sync.
                fooled[idx] = wrong
                fooled_at[idx] = torch.where(wrong, t, fooled_at[idx])
                out[idx] = adv
                idx, adv, grad, clean, labels = idx[keep], adv[keep], grad[keep], clean[keep], labels[keep]
        adv = adv + step_size * grad.sign()
        delta = (adv - clean).clamp(-eps, eps)
        adv = (clean + delta).clamp(0, 1)

    if idx.numel() > 0:
        with torch.no_grad():
            wrong = model(adv).argmax(1) != labels
        fooled[idx] = wrong
        fooled_at[idx] = torch.where(wrong & (fooled_at[idx] > steps), steps, fooled_at[idx])
        out[idx] = adv
        if steps in slot:
            wrong_at[:, slot[steps]] = wrong
    return out, fooled, fooled_at, wrong_at


def _attack(
    model, x, y, eps, step_size, steps, restarts, random_start, generator, batch_size, early_stop, stop_whole_sample,
    record=(),
):
    """Yield (start, stop, images (R * n, ...), fooled (R, n), fooled_at (R, n), wrong_at (R, n, len(record)))
    chunk by chunk."""
    _check_args(x, y, eps, step_size, steps, restarts, batch_size, generator)
    if generator is None:
        generator = _default_generator(x.device)
    eps, step_size, steps, restarts = float(eps), float(step_size), int(steps), int(restarts)
    per_chunk = max(1, int(batch_size) // restarts)
    xf = x.detach().float()
    yl = y.detach().to(device=x.device, dtype=torch.long)
    device_type = x.device.type
    with _eval_mode(model), torch.enable_grad(), torch.autocast(device_type, enabled=False):
        for start in range(0, x.shape[0], per_chunk):
            stop = min(start + per_chunk, x.shape[0])
            images, fooled, fooled_at, wrong_at = _run_chunk(
                model, xf[start:stop], yl[start:stop], eps, step_size, steps, restarts, random_start, generator,
                early_stop, stop_whole_sample, tuple(record),
            )
            n = stop - start
            yield (start, stop, images, fooled.view(restarts, n), fooled_at.view(restarts, n),
                   wrong_at.view(restarts, n, -1))


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    step_size: float,
    steps: int,
    restarts: int = 1,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    *,
    early_stop: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> torch.Tensor:
    """l-infinity PGD adversarial examples for images `x` in [0, 1] with labels `y`.

    Runs `restarts` PGD attacks per sample (each: optional uniform random start in the eps-ball,
    clamped to [0, 1], then `steps` signed-gradient ascent steps of cross-entropy of size
    `step_size`, each followed by projection onto the eps-ball around `x` and onto [0, 1]).
    Returns a tensor of x's shape and dtype: per sample, an image that fools the model if any
    restart found one (per-sample worst case over restarts), otherwise the last restart's image.

    early_stop: True (default) counts a sample as fooled if ANY iterate (start point included) is
        misclassified and freezes it there, dropping it -- with all its other restarts -- from
        further work; the returned image is that fooling iterate.  False runs every restart for
        all `steps` and uses the final iterate only (the classic convention; with
        ``random_start=False, restarts=1`` this is exactly torchattacks' PGD).
    generator: torch.Generator on x's device, the only source of randomness (None: seeded 0).
    batch_size: at most this many (sample, restart) rows per forward pass.

    The model is run in eval mode (previous modes restored), fp32, gradients w.r.t. the input only.
    """
    result = torch.empty_like(x)
    for start, stop, images, fooled, _, _ in _attack(
        model, x, y, eps, step_size, steps, restarts, random_start, generator, batch_size, early_stop, True
    ):
        n = stop - start
        any_fooled = fooled.any(0)
        first = fooled.to(torch.uint8).argmax(0)  # first restart that fooled (0 if none)
        chosen = torch.where(any_fooled, first, torch.full_like(first, restarts - 1))
        rows = chosen * n + torch.arange(n, device=chosen.device)
        result[start:stop] = images[rows].to(x.dtype)
    return result


def robust_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    step_size: float,
    steps: int,
    restarts: int = 1,
    generator: torch.Generator | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    *,
    random_start: bool = True,
    early_stop: bool = True,
) -> dict:
    """Robust accuracy of `model` under `restarts` PGD restarts, aggregated two ways.

    Restart r's images for all samples form run r; both aggregates come from these same draws:

    * ``"worst_of_restarts"``: fraction of samples robust to EVERY restart (per-sample worst case,
      the standard robust-evaluation aggregate);
    * ``"min_over_runs"``: the minimum over runs of each run's robust accuracy (the aggregate the
      paper's authors report: `restarts` independent whole-test-set PGD runs, worst run kept);
    * ``"per_run"``: list of the `restarts` per-run robust accuracies; ``"mean_over_runs"`` their mean.

    All are fractions of the same n samples computed from integer counts, so
    worst_of_restarts <= min_over_runs holds exactly.

    "Fooled" follows `early_stop` (see `pgd`): by default a (sample, restart) pair is fooled if any
    of its iterates is misclassified (stronger attack, as in AutoAttack-style evaluation), and is
    frozen from then on -- which leaves every per-run accuracy as it would be without freezing
    under that rule.  ``early_stop=False`` gives exactly the final-iterate convention of Madry et
    al.'s evaluation.  Per-run accuracies need each restart's own outcome, so unlike `pgd` a fooled
    sample's other restarts keep running.

    The returned dict also records the protocol: n, eps, step_size, steps, restarts, random_start,
    early_stop and ``"fooled_rule"`` ("any_iterate" or "final_iterate").  A final-iterate result also
    holds ``"any_iterate"``: the same aggregates under the any-iterate rule, from the same trajectories
    (identical to an early-stopped run's, up to rounding that depends on which rows share a batch).
    """
    return robust_accuracy_curve(model, x, y, eps, step_size, [steps], restarts, generator, batch_size,
                                 random_start=random_start, early_stop=early_stop)[0]


def _aggregates(robust: torch.Tensor) -> dict:
    """Both aggregates of a (restarts, n) "robust" table, from integer counts."""
    n = robust.shape[1]
    per_run = (robust.sum(1).double() / n).tolist()
    return {"worst_of_restarts": float(robust.all(0).sum().double() / n), "min_over_runs": min(per_run),
            "mean_over_runs": sum(per_run) / len(per_run), "per_run": per_run}


def robust_accuracy_curve(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    step_size: float,
    steps: list[int] | tuple[int, ...],
    restarts: int = 1,
    generator: torch.Generator | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    *,
    random_start: bool = True,
    early_stop: bool = True,
) -> list[dict]:
    """`robust_accuracy` for several step counts from ONE attack of max(steps) steps.

    PGD-T is the first T steps of PGD-T' (T < T') from the same start: its iterates do not depend on
    how many steps follow.  Under the any-iterate rule (early_stop=True) a (sample, restart) pair
    survives PGD-T iff none of x_0 .. x_T is misclassified, which the long run records per pair, so
    every T's result is exactly that of a separate PGD-T run with the same random starts -- at the
    cost of the longest one (Table 4's 1+5+...+1000 = 1351 steps become 1000).  Without early stop
    every pair runs all steps and x_T is classified for every recorded T, so the final-iterate rule
    (Madry et al.'s PGD-T) is exact at every T as well; such a result also holds, under
    ``"any_iterate"``, the any-iterate aggregates of the same trajectories.  Returns one dict per
    entry of `steps`, in order (see `robust_accuracy`).
    """
    if x.shape[0] == 0:
        raise ValueError("robust_accuracy needs at least one sample")
    steps = [int(s) for s in steps]
    if not steps:
        raise ValueError("steps must list at least one step count")
    record = tuple(sorted(set(steps)))
    first_fooled, wrong_at = [], []
    for _, _, _, _, fooled_at, wrong in _attack(
        model, x, y, eps, step_size, max(steps), restarts, random_start, generator, batch_size, early_stop, False,
        record,
    ):
        first_fooled.append(fooled_at)
        wrong_at.append(wrong)
    first_fooled = torch.cat(first_fooled, dim=1)  # (R, N)
    wrong_at = torch.cat(wrong_at, dim=1)  # (R, N, len(record)); empty with early stop
    results = []
    for t in steps:
        any_iterate = _aggregates(first_fooled > t)
        protocol = {"n": first_fooled.shape[1], "eps": float(eps), "step_size": float(step_size), "steps": t,
                    "restarts": int(restarts), "random_start": bool(random_start), "early_stop": bool(early_stop)}
        if early_stop:
            results.append({**any_iterate, **protocol, "fooled_rule": "any_iterate"})
        else:
            final = _aggregates(~wrong_at[:, :, record.index(t)])
            results.append({**final, **protocol, "fooled_rule": "final_iterate", "any_iterate": any_iterate})
    return results
