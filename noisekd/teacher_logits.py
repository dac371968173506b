"""The teacher's logits for every training image under every augmentation, computed once per teacher.

A training image's random crop and flip take only `augmentation_variants` values: (2p + 1)^2 offsets,
times 2 with flips (162 for CIFAR-10's padding 4).  For the methods whose frozen teacher is
deterministic and gives only logits (`Method.cacheable`: Hinton KD, Soft Randomization, Messy
Collaboration, Noisy Teacher; the teacher sees the clean augmented image), one pass over N x 162
images therefore replaces the teacher's forward in every step of every student of that teacher: the
training step looks up `logits[index, variant]` instead.  The values are those of the teacher's
forward on the same augmented image, in the same precision, up to the rounding that the batch
composition may change; the random draws of the run are exactly those of the uncached step.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from .data import ImageData, crop_flip, to_float
from .errors import NoiseKDError
from .io import load_torch, save_torch_atomic
from .models import WideResNet, fold_batchnorm
from .settings import Augmentation, augmentation_variants

FORMAT = "noisekd-teacher-logits"
def images_fingerprint(data: ImageData) -> str:
    """sha256 of the uint8 training images: a cache belongs to exactly one training set."""
    return hashlib.sha256(data.images.cpu().contiguous().numpy().tobytes()).hexdigest()


@torch.no_grad()
def compute(
    teacher: WideResNet,
    data: ImageData,
    augmentation: Augmentation | None,
    precision: str,
    channels_last: bool,
    batch_size: int = 1024,
    log: Callable[[str], None] = print,
) -> torch.Tensor:
    """(N, V, K) logits of `teacher` (eval mode, BatchNorm folded) on every image `data` holds, under
    each of the V augmentation variants; `precision` and `channels_last` as the training step
    resolves them (bf16 logits under bf16 autocast, as the step's teacher would give)."""
    device = data.images.device
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = fold_batchnorm(teacher).to(device, memory_format=memory_format).eval()
    n, variants = len(data), augmentation_variants(augmentation)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    out = torch.empty(n, variants, teacher.spec.num_classes, dtype=dtype, device=device)
    per_batch = max(1, batch_size)
    t0 = time.perf_counter()
    for v in range(variants):
        for start in range(0, n, per_batch):
            images = data.images[start : start + per_batch]
            if augmentation is not None:
                images = crop_flip(images, augmentation, torch.full((len(images),), v, device=device))
            x = to_float(images).contiguous(memory_format=memory_format)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                out[start : start + per_batch, v] = model(x)
    elapsed = time.perf_counter() - t0
    log(f"teacher logits of {n} images x {variants} augmentation variants in {elapsed:.1f}s "
        f"({n * variants / max(elapsed, 1e-9):.0f} img/s, {precision})")
    return out


def identity(teacher_path: str | Path, data: ImageData, augmentation: Augmentation | None, precision: str) -> dict:
    """What a cache must match to stand in for its teacher in a student's run."""
    return {
        "teacher_sha256": hashlib.sha256(Path(teacher_path).read_bytes()).hexdigest(),
        "images_sha256": images_fingerprint(data),
        "n": len(data),
        "augmentation": asdict(augmentation) if augmentation is not None else None,
        "precision": precision,
    }


def save(path: str | Path, logits: torch.Tensor, ident: dict, **extra) -> None:
    save_torch_atomic(path, {"format": FORMAT, "logits": logits.cpu(), "identity": ident, **extra})


def load(path: str | Path, data: ImageData, augmentation: Augmentation | None, precision: str,
         num_classes: int) -> tuple[torch.Tensor, dict]:
    """The (N, V, K) logits of a cache file, refused (naming the file and what differs) unless it
    was computed on these training images, with this augmentation, in this precision."""
    obj = load_torch(path)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise NoiseKDError(f"{path} is not a noisekd teacher-logits file")
    ident = obj["identity"]
    wanted = {
        "n": len(data),
        "augmentation": asdict(augmentation) if augmentation is not None else None,
        "precision": precision,
    }
    for key, value in wanted.items():
        if ident.get(key) != value:
            raise NoiseKDError(f"teacher logits {path} were computed with {key}={ident.get(key)!r}, this run "
                               f"needs {value!r}; delete the file to recompute it")
    if ident.get("images_sha256") != images_fingerprint(data):
        raise NoiseKDError(f"teacher logits {path} were computed on other training images; delete it to recompute")
    logits = obj["logits"]
    expected = (len(data), augmentation_variants(augmentation), num_classes)
    if tuple(logits.shape) != expected:
        raise NoiseKDError(f"teacher logits {path} have shape {tuple(logits.shape)}, expected {expected}")
    return logits, ident
