"""The ImageNet part of CINIC-10, the out-of-distribution companion of CIFAR-10.

CINIC-10 (Darlow et al. 2018, DOI 10.7488/ds/2448) is distributed as `CINIC-10.tar.gz`, which
extracts to `{train,valid,test}/<class>/*.png` (32x32 PNGs, CIFAR-10's ten classes).  Its images
come from CIFAR-10 (`cifar10-train-123.png`, `cifar10-test-...`) and from ImageNet
(`n02691156_1004.png`: synset_index); only the ImageNet ones are used here, since the CIFAR-10
ones are not out of distribution.

The paper describes its CINIC-10 set as "2100 images per class, 21000 in all", but CINIC-10 holds
21000 ImageNet images per class (7000 per split per class), so which images were used cannot be
recovered.  The subset is therefore a seeded, configurable selection: by default 2100 images per
class from the test split.  Within each class the file names are sorted, then permuted with a
generator seeded by (seed, class index); the first `per_class` files are taken, so the same seed
always gives the same images and a smaller `per_class` selects a subset of a larger one.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data import ImageData
from ..errors import NoiseKDError
from .cifar10 import CIFAR10_CLASSES
from .download import ensure_download, safe_extract_tar

CINIC10_URL = "https://datashare.is.ed.ac.uk/bitstream/handle/10283/3192/CINIC-10.tar.gz"
CINIC10_DOI = "10.7488/ds/2448"
CINIC10_MD5 = "6ee4d0c996905fe93221de577967a372"
CINIC10_ARCHIVE = "CINIC-10.tar.gz"
CINIC10_FOLDER = "CINIC-10"
CINIC10_SPLITS = ("train", "valid", "test")
_IMAGENET_NAME = re.compile(r"n\d+_\d+\.png")


def download_cinic10(root: str | os.PathLike, url: str = CINIC10_URL, md5: str = CINIC10_MD5) -> Path:
    """Fetch and md5-check `<root>/CINIC-10.tar.gz`, extract it safely to `<root>/CINIC-10/`."""
    root = Path(root)
    dest = root / CINIC10_FOLDER
    if not dest.is_dir():  # extraction renames into place at the end, so a present folder is complete
        archive = ensure_download(url, root / CINIC10_ARCHIVE, md5)  # md5-checked
        safe_extract_tar(archive, dest)
    return dest


def _split_dir(root: Path, split: str) -> Path:
    """The folder of `split`: under `<root>/CINIC-10/`, or `root` itself if it is the extracted folder."""
    if split not in CINIC10_SPLITS:
        raise NoiseKDError(f"CINIC-10 split must be one of {CINIC10_SPLITS}, got {split!r}")
    for base in (root / CINIC10_FOLDER, root, root / CINIC10_FOLDER / CINIC10_FOLDER):
        if (base / split).is_dir():
            return base / split
    raise NoiseKDError(
        f"CINIC-10 split folder {root / CINIC10_FOLDER / split} is missing (load with download=True to fetch it)"
    )


def imagenet_files(split_dir: Path, cls: str) -> list[str]:
    """Sorted ImageNet-sourced PNG names of one class folder (CIFAR-10 copies left out)."""
    folder = split_dir / cls
    if not folder.is_dir():
        raise NoiseKDError(f"CINIC-10 class folder {folder} is missing")
    return sorted(name for name in os.listdir(folder) if _IMAGENET_NAME.fullmatch(name))


def select_files(names: list[str], per_class: int | None, seed: int, class_index: int) -> list[str]:
    """Seeded choice of `per_class` names (all if None), returned in sorted order."""
    if per_class is None:
        return list(names)
    if per_class > len(names):
        raise NoiseKDError(f"CINIC-10 class {class_index} has {len(names)} ImageNet images, {per_class} requested")
    # One generator per (seed, class): a class's choice does not depend on the other classes.
    rng = np.random.default_rng([int(seed), int(class_index)])
    chosen = rng.permutation(len(names))[:per_class]
    return [names[i] for i in sorted(chosen)]


def _read_png(path: Path) -> np.ndarray:
    """One image as (32, 32, 3) uint8; grayscale and palette PNGs are converted to RGB."""
    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
    except Exception as exc:  # noqa: BLE001 - UnidentifiedImageError, OSError on truncated data, ...
        raise NoiseKDError(f"CINIC-10 image {path} is unreadable: {exc!r}") from None
    if rgb.shape != (32, 32, 3):
        raise NoiseKDError(f"CINIC-10 image {path} is {rgb.shape[1]}x{rgb.shape[0]}, expected 32x32")
    return rgb


def load_cinic_imagenet(
    root: str | os.PathLike,
    split: str = "test",
    per_class: int | None = 2100,
    seed: int = 0,
    download: bool = False,
) -> ImageData:
    """Seeded selection of `per_class` ImageNet images per class of a CINIC-10 split (CIFAR-10 class order)."""
    if int(seed) < 0:
        raise NoiseKDError(f"CINIC-10 selection seed must be >= 0, got {seed}")
    root = Path(root)
    if download:
        download_cinic10(root)
    split_dir = _split_dir(root, split)
    paths, labels = [], []
    for k, cls in enumerate(CIFAR10_CLASSES):
        for name in select_files(imagenet_files(split_dir, cls), per_class, seed, k):
            paths.append(split_dir / cls / name)
            labels.append(k)
    images = np.empty((len(paths), 32, 32, 3), np.uint8)
    for i, path in enumerate(paths):
        images[i] = _read_png(path)
    # A digest of the chosen files records exactly which images this subset holds.
    digest = hashlib.sha256("\n".join(f"{p.parent.name}/{p.name}" for p in paths).encode()).hexdigest()
    return ImageData(
        torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))),
        torch.tensor(labels, dtype=torch.int64),
        CIFAR10_CLASSES,
        {
            "source": "cinic10-imagenet",
            "doi": CINIC10_DOI,
            "split": split,
            "per_class": per_class,
            "seed": int(seed),
            "files_sha256": digest,
        },
    )
