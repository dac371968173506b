"""Device-resident image data, seeded batched augmentation and label corruption.

A dataset is a uint8 tensor (N, C, H, W) plus int64 labels, loaded once and kept on the training
device.  Batches are drawn by index from a seeded permutation; random crop and flip run on the whole
batch at once on that device, so the training loop never touches PIL or a Python loop per sample.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .errors import NoiseKDError
from .io import atomic_path
from .settings import Augmentation


@dataclass
class ImageData:
    """uint8 images (N, C, H, W) and int64 labels; `meta` holds provenance (source, subset, seed)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise NoiseKDError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise NoiseKDError(f"labels must be int64 (N,), got {self.labels.dtype} {tuple(self.labels.shape)}")
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise NoiseKDError(f"labels outside [0, {len(self.classes)}) for classes {self.classes}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to(self, device: str | torch.device) -> "ImageData":
        return ImageData(self.images.to(device), self.labels.to(device), self.classes, dict(self.meta))

    def subset(self, index: torch.Tensor) -> "ImageData":
        return ImageData(self.images[index], self.labels[index], self.classes, dict(self.meta))

    def with_labels(self, labels: torch.Tensor, **meta) -> "ImageData":
        return ImageData(self.images, labels, self.classes, {**self.meta, **meta})


def save_image_data(data: ImageData, path: str | os.PathLike) -> None:
    """Write an .npz atomically (a killed job leaves no file that looks complete)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                images=data.images.cpu().numpy(),
                labels=data.labels.cpu().numpy(),
                classes=np.array(data.classes),
                meta=np.array(repr(data.meta)),
            )


def load_image_data(path: str | os.PathLike) -> ImageData:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            images, labels, classes = z["images"], z["labels"], z["classes"]
            meta = str(z["meta"]) if "meta" in z else "{}"
    except FileNotFoundError:
        raise NoiseKDError(f"dataset file {path} does not exist") from None
    except Exception as exc:  # zipfile/ValueError/KeyError: all mean a bad file
        raise NoiseKDError(f"dataset file {path} is unreadable (truncated or corrupt?): {exc}") from None
    import ast

    return ImageData(
        torch.from_numpy(np.ascontiguousarray(images)),
        torch.from_numpy(labels.astype(np.int64)),
        tuple(str(c) for c in classes),
        ast.literal_eval(meta),
    )


# ---------------------------------------------------------------------------------------------
# Augmentation


def draw_crop_flip(b: int, aug: Augmentation, device: torch.device, generator: torch.Generator) -> torch.Tensor:
    """The augmentation variant of each of `b` images, an int64 in [0, augmentation_variants(aug)):
    (flip * side + offset_y) * side + offset_x.  Draw order (offsets y, x, then flips) is fixed for
    determinism; nothing is drawn for a disabled part."""
    side = 2 * aug.crop_padding + 1
    variant = torch.zeros(b, dtype=torch.int64, device=device)
    if aug.crop_padding > 0:
        oy = torch.randint(0, side, (b,), device=device, generator=generator)
        ox = torch.randint(0, side, (b,), device=device, generator=generator)
        variant = oy * side + ox
    if aug.hflip:
        flip = torch.rand(b, device=device, generator=generator) < 0.5
        variant = variant + flip.long() * (side * side)
    return variant


def crop_flip(images: torch.Tensor, aug: Augmentation, variant: torch.Tensor) -> torch.Tensor:
    """Crop (zero padding) and flip uint8 (B, C, H, W) images, each as its `variant` says.

    One gather for the whole batch: each image's window is selected with broadcast row/column
    indices into the padded batch."""
    b, c, h, w = images.shape
    device = images.device
    p = aug.crop_padding
    side = 2 * p + 1
    out = images
    if p > 0:
        padded = F.pad(out, (p, p, p, p))
        offsets = variant % (side * side)
        rows = ((offsets // side)[:, None] + torch.arange(h, device=device))[:, None, :, None]
        cols = ((offsets % side)[:, None] + torch.arange(w, device=device))[:, None, None, :]
        batch = torch.arange(b, device=device)[:, None, None, None]
        chan = torch.arange(c, device=device)[None, :, None, None]
        out = padded[batch, chan, rows, cols]
    if aug.hflip:
        flip = variant >= side * side
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out


def random_crop_flip(images: torch.Tensor, aug: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """Batched random crop (zero padding) and horizontal flip of uint8 (B, C, H, W) images."""
    return crop_flip(images, aug, draw_crop_flip(images.shape[0], aug, images.device, generator))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]."""
    return images.float().div_(255.0)


class DeviceSampler:
    """Seeded epoch sampler over a device-resident dataset.

    `permutation()` draws one epoch's order from `generator`; `gather(indices(perm, step))` gathers
    that step's images and labels by index on the data's device and augments them as one batch.  The
    last partial batch is kept, as a default PyTorch DataLoader does.  Because an epoch is fully
    described by (generator state, permutation, step), a checkpoint can resume mid-epoch exactly.
    """

    def __init__(
        self,
        data: ImageData,
        batch_size: int,
        generator: torch.Generator,
        augmentation: Augmentation | None = None,
    ):
        if batch_size < 1:
            raise NoiseKDError(f"batch_size must be >= 1, got {batch_size}")
        self.data = data
        self.batch_size = batch_size
        self.generator = generator
        self.augmentation = augmentation

    def __len__(self) -> int:
        return -(-len(self.data) // self.batch_size)

    def permutation(self) -> torch.Tensor:
        return torch.randperm(len(self.data), device=self.data.images.device, generator=self.generator)

    def indices(self, perm: torch.Tensor, step: int) -> torch.Tensor:
        return perm[step * self.batch_size : (step + 1) * self.batch_size]

    def gather(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Augmented images, labels and augmentation variants (see `draw_crop_flip`) of the samples
        `idx` (no host sync: CUDA-graph safe)."""
        images = self.data.images[idx]
        if self.augmentation is None:
            return images, self.data.labels[idx], torch.zeros_like(idx)
        variant = draw_crop_flip(len(idx), self.augmentation, images.device, self.generator)
        return crop_flip(images, self.augmentation, variant), self.data.labels[idx], variant

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        perm = self.permutation()
        for step in range(len(self)):
            yield self.gather(self.indices(perm, step))


# ---------------------------------------------------------------------------------------------
# Label noise


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded per-class split: (kept indices, held-out indices), held out ~fraction of each class."""
    g = torch.Generator().manual_seed(int(seed))
    keep, held = [], []
    labels = labels.cpu()
    for cls in torch.unique(labels):
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = int(round(fraction * len(idx)))
        held.append(idx[:k])
        keep.append(idx[k:])
    return torch.cat(keep).sort().values, torch.cat(held).sort().values
