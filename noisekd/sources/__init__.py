"""Dataset sources: raw files (or bundled data) -> `noisekd.data.ImageData`.

`prepare_dataset(name, root, **options)` gives the "train" and "test" splits of a training dataset
("cifar10", "svhn", "digits"); `prepare_ood(name, root, **options)` gives one out-of-distribution
evaluation set ("cinic10": the ImageNet part of CINIC-10, "printed_digits", "cifar10c").  Options
go to the loader unchanged, e.g. `download=True`, `per_class=2100`, `seed=0`, `corruption=...`.
Every download goes through `download.ensure_download`: md5-checked, one line naming file and
checksums on failure, nothing partial left behind.
"""

from __future__ import annotations

import os

from ..data import ImageData
from ..errors import NoiseKDError
from .cifar10 import CIFAR10_CLASSES, download_cifar10, load_cifar10
from .cifar10c import CIFAR10C_CORRUPTIONS, download_cifar10c, load_cifar10c
from .cinic10 import download_cinic10, load_cinic_imagenet
from .digits import DIGIT_CLASSES, load_digits, render_printed_digits
from .download import check_md5, download, ensure_download, file_md5, safe_extract_tar
from .svhn import load_svhn

DATASETS = ("cifar10", "svhn", "digits")
OOD_DATASETS = ("cinic10", "printed_digits", "cifar10c")

__all__ = [
    "CIFAR10C_CORRUPTIONS",
    "CIFAR10_CLASSES",
    "DATASETS",
    "DIGIT_CLASSES",
    "OOD_DATASETS",
    "check_md5",
    "download",
    "download_cifar10",
    "download_cifar10c",
    "download_cinic10",
    "ensure_download",
    "file_md5",
    "load_cifar10",
    "load_cifar10c",
    "load_cinic_imagenet",
    "load_digits",
    "load_svhn",
    "prepare_dataset",
    "prepare_ood",
    "render_printed_digits",
    "safe_extract_tar",
]


def prepare_dataset(name: str, root: str | os.PathLike, **options) -> dict[str, ImageData]:
    """{"train": ..., "test": ...} for a training dataset; `root` is ignored for "digits" (bundled)."""
    if name == "cifar10":
        return {split: load_cifar10(root, split, **options) for split in ("train", "test")}
    if name == "svhn":
        return {split: load_svhn(root, split, **options) for split in ("train", "test")}
    if name == "digits":
        return {split: load_digits(split, **options) for split in ("train", "test")}
    raise NoiseKDError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


def prepare_ood(name: str, root: str | os.PathLike, **options) -> ImageData:
    """One out-of-distribution set; `root` is ignored for "printed_digits" (rendered)."""
    if name == "cinic10":
        return load_cinic_imagenet(root, **options)
    if name == "printed_digits":
        return render_printed_digits(**options)
    if name == "cifar10c":
        return load_cifar10c(root, **options)  # needs corruption= and severity=
    raise NoiseKDError(f"unknown out-of-distribution set {name!r}; known: {', '.join(OOD_DATASETS)}")
