"""CIFAR-10 from the python pickles in `<root>/cifar-10-batches-py/`.

`download=True` fetches `<root>/cifar-10-python.tar.gz` through the project's checked download (its
md5 checked, a bad copy named with both checksums and removed) and extracts it safely; the pickles
are parsed here, into NCHW uint8, with an unpickler that only accepts the numpy globals the real
files use (a pickle can otherwise run arbitrary code).  With `verify=True` (the default) every
file's md5 is checked before it is unpickled; tests that write small files in the same format pass
`verify=False` or their own md5 table.  URL and md5s are torchvision's (`CIFAR10`), where
tests/test_downloads.py checks that they still agree.
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
from .download import check_md5, ensure_download, safe_extract_tar

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
BASE_FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
META_FILE = "batches.meta"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
FILE_MD5S = {  # each extracted file's md5
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}

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


def download_cifar10(root: str | os.PathLike, url: str | None = None, md5: str | None = None) -> Path:
    """Fetch and md5-check `<root>/cifar-10-python.tar.gz` (default: the release, CIFAR10_URL /
    CIFAR10_MD5), extract its `cifar-10-batches-py/` safely to `<root>/cifar-10-batches-py/`."""
    root = Path(root)
    folder = root / BASE_FOLDER
    if not folder.is_dir():  # extraction renames into place at the end, so a present folder is complete
        archive = ensure_download(url or CIFAR10_URL, root / CIFAR10_ARCHIVE, md5 or CIFAR10_MD5)
        safe_extract_tar(archive, folder, subdir=BASE_FOLDER)
    return folder


def load_cifar10(root: str | os.PathLike, split: str, download: bool = False, verify: bool = True) -> ImageData:
    """CIFAR-10 `split` ("train": 50000, "test": 10000 images) as uint8 NCHW ImageData.

    Files are read from `<root>/cifar-10-batches-py/`.  `download=True` fetches and extracts the
    archive when that folder is missing; `verify=True` checks each file's md5 before parsing it.
    """
    names = cifar10_files(split)
    folder = Path(root) / BASE_FOLDER
    paths = [folder / name for name in (*names, META_FILE)]
    if download:
        download_cifar10(root)
    for p in paths:
        if not p.is_file():
            # A folder without its files was not extracted by us (ours appear whole): only removing it helps.
            hint = f"remove {folder} to extract it again" if download else "load with download=True to fetch it"
            raise NoiseKDError(f"CIFAR-10 file {p} is missing ({hint})")
    if verify:
        for p in paths:
            check_md5(p, FILE_MD5S[p.name])

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
