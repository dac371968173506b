"""Distillation losses as plain functions (no weights inside; the method registry weights them).

Each function follows the published definition; the references are noted per function.  All of
them compute in fp32 even under autocast, because softmax/KL with temperature and Gram matrices are
precision-sensitive: each runs with autocast off (autocast would recast the matrix products of fp32
inputs -- Gram matrices, pairwise distances, angles -- to bf16) on inputs cast to fp32.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def _fp32(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.float() for t in tensors]


def _device_type(args) -> str:
    for a in args:
        if isinstance(a, (list, tuple)) and a:
            a = a[0]
        if isinstance(a, torch.Tensor):
            return a.device.type
    return "cpu"


def _autocast_off(loss):
    """Run `loss` with autocast disabled on its inputs' device."""
    @functools.wraps(loss)
    def wrapper(*args, **kwargs):
        with torch.autocast(_device_type(args), enabled=False):
            return loss(*args, **kwargs)
    return wrapper


@_autocast_off
def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    (logits,) = _fp32(logits)
    return F.cross_entropy(logits, targets)


@_autocast_off
def hinton_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """Hinton et al. (2015): tau^2 * KL(softmax(t/tau) || softmax(s/tau)).

    Summed over classes and averaged over the batch ('batchmean'), not averaged over classes: the
    latter silently divides the KD term by the number of classes, a defect of some public code.
    """
    s, t = _fp32(student_logits, teacher_logits)
    log_p_s = F.log_softmax(s / tau, dim=1)
    log_p_t = F.log_softmax(t / tau, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)
    return tau * tau * kl.mean()


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """Zagoruyko & Komodakis (2017): channel-mean of squared activations, flattened, L2-normalised."""
    (f,) = _fp32(features)
    return F.normalize(f.pow(2).mean(dim=1).flatten(1), dim=1)


@_autocast_off
def attention_transfer(student_feats, teacher_feats) -> torch.Tensor:
    """Sum over layer pairs of the mean (over batch and positions) squared attention-map difference."""
    if len(student_feats) != len(teacher_feats):
        raise ValueError(f"attention transfer needs matching layer lists, got {len(student_feats)} and {len(teacher_feats)}")
    total = student_feats[0].new_zeros((), dtype=torch.float32)
    for fs, ft in zip(student_feats, teacher_feats):
        if fs.shape[-2:] != ft.shape[-2:]:
            raise ValueError(f"attention maps need equal spatial sizes, got {tuple(fs.shape)} and {tuple(ft.shape)}")
        total = total + (attention_map(fs) - attention_map(ft)).pow(2).mean()
    return total


@_autocast_off
def similarity_preserving(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """Tung & Mori (2019): G = f f^T of the flattened features with rows L2-normalised;
    ||G_s - G_t||_F^2 / B^2."""
    fs, ft = _fp32(fs, ft)
    b = fs.shape[0]
    gs = F.normalize(fs.reshape(b, -1) @ fs.reshape(b, -1).t(), dim=1)
    gt = F.normalize(ft.reshape(b, -1) @ ft.reshape(b, -1).t(), dim=1)
    return (gs - gt).pow(2).sum() / (b * b)


def _pairwise_distances(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distances with a zero diagonal, as Park et al.'s official pdist computes them."""
    sq = e.pow(2).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * e @ e.t()).clamp(min=eps)
    d = d2.sqrt()
    return d * (1.0 - torch.eye(e.shape[0], device=e.device, dtype=e.dtype))


def _mean_of_positive(d: torch.Tensor) -> torch.Tensor:
    """Mean over the positive entries, without boolean indexing (which would sync with the host)."""
    positive = d > 0
    return (d * positive).sum() / positive.sum()


@_autocast_off
def rkd_distance(es: torch.Tensor, et: torch.Tensor) -> torch.Tensor:
    """Park et al. (2019) RKD-D: distances normalised by their mean over positive entries;
    Huber (smooth-L1, delta = 1) averaged over the full B x B matrix."""
    es, et = _fp32(es, et)
    dt = _pairwise_distances(et)
    dt = dt / _mean_of_positive(dt)
    ds = _pairwise_distances(es)
    ds = ds / _mean_of_positive(ds)
    return F.smooth_l1_loss(ds, dt, reduction="mean")


def _angles(e: torch.Tensor) -> torch.Tensor:
    diff = F.normalize(e[None, :, :] - e[:, None, :], p=2, dim=2)  # diff[i, j] = e_j - e_i
    return torch.bmm(diff, diff.transpose(1, 2)).reshape(-1)  # cos of angle j-i-k, all B^3 triples


@_autocast_off
def rkd_angle(es: torch.Tensor, et: torch.Tensor) -> torch.Tensor:
    """Park et al. (2019) RKD-A: cosines between L2-normalised difference vectors,
    smooth-L1 averaged over all B^3 triples."""
    es, et = _fp32(es, et)
    return F.smooth_l1_loss(_angles(es), _angles(et), reduction="mean")


@_autocast_off
def feature_mimicry(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """Hong et al. (2021): MSE between the student's features on the noisy input and the
    teacher's features on the clean input (mean over all elements)."""
    fs, ft = _fp32(fs, ft)
    if fs.shape != ft.shape:
        raise ValueError(f"feature mimicry needs equal feature shapes, got {tuple(fs.shape)} and {tuple(ft.shape)}")
    return F.mse_loss(fs, ft)


@_autocast_off
def logit_l2(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Logit regression (Ba & Caruana; Sau & Balasubramanian's noisy-teacher loss):
    1/2 ||z_s - z_t||^2 summed over classes, averaged over the batch."""
    s, t = _fp32(student_logits, teacher_logits)
    return 0.5 * (s - t).pow(2).sum(dim=1).mean()
