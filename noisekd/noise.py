"""Every injection of the paper's noise, each a small function named after what it does.

- `noisy_input`: Gaussian input noise x + N(0, sigma^2) (Soft Randomization's and Gaussian
  augmentation's student input, Eq. 2; feature mimicry's; the linear study's noisy inputs);
- `perturb_logits`: multiplicative noise on a teacher's logits (Noisy Teacher);
- `redraw_labels`: per-batch random target variability (Messy Collaboration);
- `corrupt_labels`: the static label corruption of the training set (Figures 4 and 5);
- `dropout_keep`: a dropout mask, kept active in the teacher for Fickle Teacher (`noisekd.models`).

Every draw comes from an explicit, seeded generator, never from the global RNG.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import NoiseKDError


def noisy_input(x, sigma: float, generator, clip: bool = False):
    """x + sigma * N(0, 1) per element, from `generator`: a torch.Generator for a tensor, a numpy
    Generator for an array.  Not clipped to [0, 1] unless `clip` (see noisekd.methods)."""
    if isinstance(x, np.ndarray):
        noise = generator.standard_normal(x.shape)
    else:
        noise = torch.randn(x.shape, device=x.device, generator=generator)
    out = x + sigma * noise
    return out.clip(0.0, 1.0) if clip else out


def perturb_logits(logits: torch.Tensor, sigma: float, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Noisy Teacher (Sau & Balasubramanian, 2016): z' = z * (1 + xi), xi ~ N(0, sigma^2) drawn per
    logit, applied to each sample with probability `rate` (their alpha); other samples keep z."""
    b = logits.shape[0]
    chosen = torch.rand(b, 1, device=logits.device, generator=generator) < rate
    xi = torch.randn(logits.shape, device=logits.device, generator=generator) * sigma
    return torch.where(chosen, logits * (1.0 + xi), logits)


def redraw_labels(
    labels: torch.Tensor, rate: float, num_classes: int, generator: torch.Generator
) -> torch.Tensor:
    """Per-batch target variability (Messy Collaboration): each label is replaced with probability
    `rate` by a class drawn uniformly over all `num_classes` classes (0 .. num_classes-1 inclusive)."""
    replace = torch.rand(labels.shape, device=labels.device, generator=generator) < rate
    random = torch.randint(0, num_classes, labels.shape, device=labels.device, generator=generator)
    return torch.where(replace, random, labels)


def corrupt_labels(labels: torch.Tensor, rate: float, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Static label corruption (Messy Collaboration experiments, Fig. 4/5 of the paper).

    A seeded fraction `rate` of the samples (exactly round(rate * N), chosen without replacement)
    get a label drawn uniformly from all `num_classes` classes, so the draw may repeat the true class
    (Zhang et al. 2017's convention; the paper does not say): about rate * (1 - 1/K) of the labels end
    up wrong.  Returns (new labels, sorted indices of the re-drawn samples).
    """
    if not 0.0 <= rate <= 1.0:
        raise NoiseKDError(f"label corruption rate must be in [0, 1], got {rate}")
    g = torch.Generator().manual_seed(int(seed))
    n = labels.shape[0]
    chosen = torch.randperm(n, generator=g)[: round(rate * n)]
    new = labels.clone().cpu()
    new[chosen] = torch.randint(0, num_classes, (len(chosen),), generator=g)
    return new.to(labels.device), chosen.sort().values


def dropout_keep(keep: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Fill `keep` in place with a dropout mask: 1 with probability 1 - p, else 0."""
    return keep.bernoulli_(1.0 - p, generator=generator)
