"""CIFAR-10-C (Hendrycks & Dietterich 2019): CIFAR-10's test set under 19 corruptions.

`CIFAR-10-C.tar` (Zenodo record 2535967) extracts to `CIFAR-10-C/` holding `<corruption>.npy`,
each (50000, 32, 32, 3) uint8: severities 1..5 stacked, severity s in rows (s-1)*10000 .. s*10000-1,
each block in CIFAR-10 test order, and `labels.npy` (50000,).  Rows per severity are inferred as
len(labels) // 5, so small files in the same layout work too; any other image size or dtype is
refused naming the file.  Arrays are memory-mapped and only the requested severity's rows are read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..corruptions import CORRUPTIONS
from ..data import ImageData
from ..errors import NoiseKDError
from .cifar10 import CIFAR10_CLASSES
from .download import ensure_download, safe_extract_tar

CIFAR10C_URL = "https://zenodo.org/records/2535967/files/CIFAR-10-C.tar"
CIFAR10C_MD5 = "56bf5dcef84df0e2308c6dcbcbbd8499"
CIFAR10C_ARCHIVE = "CIFAR-10-C.tar"
CIFAR10C_FOLDER = "CIFAR-10-C"
CIFAR10C_CORRUPTIONS = CORRUPTIONS  # one list of the 19 release file names, kept in noisekd.corruptions
SEVERITIES = (1, 2, 3, 4, 5)
IMAGE_SHAPE = (32, 32, 3)  # H, W, C of every image


def download_cifar10c(root: str | os.PathLike, url: str | None = None, md5: str | None = None) -> Path:
    """Fetch and md5-check `<root>/CIFAR-10-C.tar` (default: the release, CIFAR10C_URL / CIFAR10C_MD5),
    extract it safely to `<root>/CIFAR-10-C/`."""
    root = Path(root)
    url, md5 = url or CIFAR10C_URL, md5 or CIFAR10C_MD5
    dest = root / CIFAR10C_FOLDER
    if not dest.is_dir():  # extraction renames into place at the end, so a present folder is complete
        archive = ensure_download(url, root / CIFAR10C_ARCHIVE, md5)
        safe_extract_tar(archive, dest, subdir=CIFAR10C_FOLDER)
    return dest


def _open_npy(path: Path) -> np.ndarray:
    """Memory-map one .npy file; a missing, truncated or corrupt file raises NoiseKDError naming it."""
    if not path.is_file():
        raise NoiseKDError(f"CIFAR-10-C file {path} is missing (download_cifar10c fetches it)")
    try:
        # mmap checks the header against the file size, so a truncated file fails here.
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - ValueError on a bad header or a short file, ...
        raise NoiseKDError(f"CIFAR-10-C file {path} is unreadable (truncated or corrupt?): {exc!r}") from None


def load_cifar10c(root: str | os.PathLike, corruption: str, severity: int, download: bool = False) -> ImageData:
    """One corruption at one severity (1..5) of CIFAR-10-C as uint8 NCHW ImageData, in test-set order."""
    if corruption not in CIFAR10C_CORRUPTIONS:
        raise NoiseKDError(f"unknown CIFAR-10-C corruption {corruption!r}; valid: {', '.join(CIFAR10C_CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise NoiseKDError(f"CIFAR-10-C severity must be one of {SEVERITIES}, got {severity!r}")
    root = Path(root)
    if download:
        download_cifar10c(root)
    folder = root / CIFAR10C_FOLDER
    labels_path, images_path = folder / "labels.npy", folder / f"{corruption}.npy"
    labels = _open_npy(labels_path)
    if labels.ndim != 1 or len(labels) % len(SEVERITIES) or labels.dtype.kind not in "iu":
        raise NoiseKDError(
            f"CIFAR-10-C file {labels_path}: expected integer labels (5 * n,), got {labels.dtype} {labels.shape}"
        )
    images = _open_npy(images_path)
    # Checked whole here: a wrong size would otherwise surface as a broadcast error far from the file.
    expected = (len(labels), *IMAGE_SHAPE)
    if images.dtype != np.uint8 or images.shape != expected:
        raise NoiseKDError(
            f"CIFAR-10-C file {images_path}: expected uint8 {expected} (N, H, W, C; N as in labels.npy), "
            f"got {images.dtype} {images.shape}"
        )
    rows = len(labels) // len(SEVERITIES)
    start, stop = (severity - 1) * rows, severity * rows
    block_labels = np.asarray(labels[start:stop], dtype=np.int64)
    if block_labels.size and (block_labels.min() < 0 or block_labels.max() > 9):
        raise NoiseKDError(f"CIFAR-10-C file {labels_path}: labels outside 0..9")
    # Only this severity's rows are read from disk; (N, H, W, C) -> (N, C, H, W).
    block = np.ascontiguousarray(images[start:stop].transpose(0, 3, 1, 2))
    return ImageData(
        torch.from_numpy(block),
        torch.from_numpy(block_labels),
        CIFAR10_CLASSES,
        {"source": "cifar10c", "corruption": corruption, "severity": int(severity)},
    )
