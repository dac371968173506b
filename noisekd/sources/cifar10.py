"""CIFAR-10 from the python pickles in `<root>/cifar-10-batches-py/`.

torchvision's downloader fetches and checks the archive (`download=True`); the pickles are parsed
here, into NCHW uint8, with an unpickler that only accepts the numpy globals the real files use (a
pickle can otherwise run arbitrary code).  With `verify=True` (the default) every file's md5 is
checked against the table in torchvision's `CIFAR10` class before it is unpickled; tests that write
small files in the same format pass `verify=False`.
"""

from __future__ import annotations

import codecs
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from ..data import ImageData
from ..errors import NoiseKDError
from .download import check_md5

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
BASE_FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
META_FILE = "batches.meta"

# numpy's array-reconstruction function, whatever module it lives in for this numpy version.
_RECONSTRUCT = np.ndarray((0,), np.uint8).__reduce__()[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # the original (numpy 1.x) files
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # files pickled by numpy 2
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how Python 3 writes bytes at protocol 2
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler limited to plain containers and numpy arrays."""

    def find_class(self, module: str, name: str):
        """Resolve only whitelisted globals; anything else is refused."""
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 pickle") from None


def _unpickle(path: Path) -> dict:
    """Read one CIFAR-10 pickle (Python 2 strings come back as bytes); any failure names the file."""
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise NoiseKDError(f"CIFAR-10 file {path} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - EOFError, UnpicklingError, ValueError, ...: all mean a bad file
        raise NoiseKDError(f"CIFAR-10 file {path} is unreadable (truncated or corrupt?): {exc!r}") from None
    if not isinstance(obj, dict):
        raise NoiseKDError(f"CIFAR-10 file {path} does not hold a dict")
    return obj


def _decode(value) -> str:
    """A class name from the file (bytes in the original Python 2 pickles)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 3, 32, 32) uint8, labels (N,) int64) from one data/test batch."""
    batch = _unpickle(path)
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise NoiseKDError(f"CIFAR-10 file {path}: b'data' is not a uint8 (N, 3072) array")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise NoiseKDError(f"CIFAR-10 file {path}: b'labels' is not a list of integers") from None
    if labels.shape != (data.shape[0],):
        raise NoiseKDError(f"CIFAR-10 file {path}: {labels.shape} labels for {data.shape[0]} images")
    # Each row is R (1024) then G (1024) then B (1024), each plane row-major: exactly C, H, W.
    return data.reshape(-1, 3, 32, 32), labels


def cifar10_files(split: str) -> tuple[str, ...]:
    """The batch files of a split ("train" or "test")."""
    if split == "train":
        return TRAIN_FILES
    if split == "test":
        return TEST_FILES
    raise NoiseKDError(f"CIFAR-10 split must be 'train' or 'test', got {split!r}")


def _torchvision_md5s() -> dict[str, str]:
    """File name -> md5, from the table torchvision uses to check its own download."""
    from torchvision.datasets import CIFAR10

    table = {name: md5 for name, md5 in [*CIFAR10.train_list, *CIFAR10.test_list]}
    table[CIFAR10.meta["filename"]] = CIFAR10.meta["md5"]
    return table


def load_cifar10(root: str | os.PathLike, split: str, download: bool = False, verify: bool = True) -> ImageData:
    """CIFAR-10 `split` ("train": 50000, "test": 10000 images) as uint8 NCHW ImageData.

    Files are read from `<root>/cifar-10-batches-py/`.  `download=True` fetches them with
    torchvision when missing; `verify=True` checks each file's md5 before parsing it.
    """
    names = cifar10_files(split)
    folder = Path(root) / BASE_FOLDER
    paths = [folder / name for name in (*names, META_FILE)]
    if download and not all(p.is_file() for p in paths):
        import torchvision.datasets

        # Downloads, checks the archive's md5 and extracts it; we then parse the files ourselves.
        torchvision.datasets.CIFAR10(str(root), train=split == "train", download=True)
    for p in paths:
        if not p.is_file():
            raise NoiseKDError(f"CIFAR-10 file {p} is missing (load with download=True to fetch it)")
    if verify:
        md5s = _torchvision_md5s()
        for p in paths:
            check_md5(p, md5s[p.name])

    meta = _unpickle(folder / META_FILE)
    classes = tuple(_decode(c) for c in meta.get(b"label_names", ()))
    if len(classes) != 10:
        raise NoiseKDError(f"CIFAR-10 file {folder / META_FILE}: expected 10 b'label_names', got {len(classes)}")
    batches = [_read_batch(folder / name) for name in names]
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise NoiseKDError(f"CIFAR-10 labels in {folder} are outside 0..9")
    return ImageData(
        torch.from_numpy(np.ascontiguousarray(images)),
        torch.from_numpy(labels),
        classes,
        {"source": "cifar10", "split": split},
    )
