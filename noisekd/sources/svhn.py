"""SVHN (cropped digits, 32x32) from the release's `<root>/{train,test,extra}_32x32.mat` files.

`download=True` fetches a missing file through the project's checked download; the files are
parsed here with scipy.io.loadmat.  `X` is (32, 32, 3, N) uint8 (H, W, C, N) and `y` is (N, 1) with
10 standing for the digit 0, which is mapped to 0 so that labels are the digits themselves.  With
`verify=True` each file's md5 is checked (with `download=True` too, a file with another md5 is
removed and fetched again); tests on small files pass `verify=False` or their own md5 table.  URLs
and md5s are torchvision's (`SVHN.split_list`), where tests/test_downloads.py checks that they agree.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.io
import torch

from ..data import ImageData
from ..errors import NoiseKDError
from .download import check_md5, ensure_download

SVHN_CLASSES = tuple(str(d) for d in range(10))
SVHN_SPLITS = ("train", "test", "extra")
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"  # + the file name
SVHN_MD5S = {
    "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
    "extra_32x32.mat": "a93ce644f1a588dc4d68dda5feec44a7",
}


def svhn_filename(split: str) -> str:
    """The .mat file of a split."""
    if split not in SVHN_SPLITS:
        raise NoiseKDError(f"SVHN split must be one of {SVHN_SPLITS}, got {split!r}")
    return f"{split}_32x32.mat"


def _read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 3, 32, 32) uint8, labels (N,) int64 with 10 -> 0) from one SVHN .mat file."""
    try:
        mat = scipy.io.loadmat(path, variable_names=("X", "y"))
        x, y = mat["X"], mat["y"]
    except FileNotFoundError:
        raise NoiseKDError(f"SVHN file {path} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - ValueError, TypeError, KeyError, zlib errors ...: all mean a bad file
        raise NoiseKDError(f"SVHN file {path} is unreadable (truncated or corrupt?): {exc!r}") from None
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise NoiseKDError(f"SVHN file {path}: X is {x.dtype} {x.shape}, expected uint8 (32, 32, 3, N)")
    y = np.asarray(y).reshape(-1).astype(np.int64)
    if y.shape != (x.shape[3],) or (y.size and (y.min() < 1 or y.max() > 10)):
        raise NoiseKDError(f"SVHN file {path}: y must hold {x.shape[3]} labels in 1..10")
    y[y == 10] = 0  # SVHN writes the digit 0 as class 10
    # (H, W, C, N) -> (N, C, H, W)
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y


def load_svhn(root: str | os.PathLike, split: str, download: bool = False, verify: bool = True) -> ImageData:
    """SVHN `split` ("train": 73257, "test": 26032, "extra" images) as uint8 NCHW ImageData."""
    name = svhn_filename(split)
    path = Path(root) / name
    if download and (verify or not path.is_file()):
        ensure_download(SVHN_URL + name, path, SVHN_MD5S[name])  # md5-checked, present or fetched
    elif not path.is_file():
        raise NoiseKDError(f"SVHN file {path} is missing (load with download=True to fetch it)")
    elif verify:
        check_md5(path, SVHN_MD5S[name])
    images, labels = _read_mat(path)
    return ImageData(
        torch.from_numpy(images), torch.from_numpy(labels), SVHN_CLASSES, {"source": "svhn", "split": split}
    )
