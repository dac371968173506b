"""Checked downloads and safe archive extraction.

A download streams into a temporary file beside its destination and is renamed into place only
once its md5 matches, so a killed or corrupted transfer never leaves a file that looks complete.
Archives are extracted into a temporary folder beside the destination and renamed at the end, after
every member has been checked for paths or links that would land outside the destination.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from ..errors import NoiseKDError
from ..io import atomic_path

_CHUNK = 1 << 20
# tarfile's extraction filters (Python >= 3.11.4); without them only our own checks apply.
_FILTER_ERROR = getattr(tarfile, "FilterError", ())


def _md5():
    """A fresh md5 hasher."""
    # usedforsecurity=False: md5 is an integrity check here, and FIPS builds refuse it otherwise.
    return hashlib.md5(usedforsecurity=False)


def file_md5(path: str | os.PathLike) -> str:
    """Hex md5 of a file, read in chunks."""
    digest = _md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_md5(path: str | os.PathLike, md5: str) -> None:
    """Raise NoiseKDError (naming the file, expected and actual md5) unless `path` has md5 `md5`."""
    path = Path(path)
    if not path.is_file():
        raise NoiseKDError(f"{path} does not exist (expected md5 {md5})")
    actual = file_md5(path)
    if actual != md5.lower():
        raise NoiseKDError(f"{path}: md5 {actual} does not match the expected {md5}")


def download(url: str, dest: str | os.PathLike, md5: str, timeout: float = 60.0) -> Path:
    """Download `url` to `dest`, verifying its md5; nothing is left at `dest` unless it matches."""
    dest = Path(dest)
    digest = _md5()
    request = urllib.request.Request(url, headers={"User-Agent": "noisekd"})
    with atomic_path(dest) as tmp:  # the temporary file is removed on any failure below
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as out:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise NoiseKDError(f"download of {url} to {dest} failed: {reason}") from None
        actual = digest.hexdigest()
        if actual != md5.lower():
            raise NoiseKDError(f"download of {url} to {dest}: md5 {actual} does not match the expected {md5}")
    return dest


def ensure_download(url: str, dest: str | os.PathLike, md5: str) -> Path:
    """Download `url` to `dest` unless a file with the right md5 is already there."""
    dest = Path(dest)
    if dest.is_file() and file_md5(dest) == md5.lower():
        return dest
    return download(url, dest, md5)


def _inside(name: str) -> bool:
    """True if the archive-relative path `name` stays inside the extraction folder."""
    norm = posixpath.normpath(name)
    return not (norm == ".." or norm.startswith(("../", "/")))


def _checked_members(tar: tarfile.TarFile, archive: Path) -> Iterator[tarfile.TarInfo]:
    """Yield the archive's members, raising on the first one that could write outside the folder."""
    for member in tar:
        name = member.name
        if name.startswith(("/", "\\")) or os.path.isabs(name) or (name[1:2] == ":" and name[:1].isalpha()):
            raise NoiseKDError(f"archive {archive}: member {name!r} has an absolute path; refusing to extract")
        if not _inside(name):
            raise NoiseKDError(f"archive {archive}: member {name!r} escapes the destination; refusing to extract")
        if member.issym():
            target = member.linkname
            if posixpath.isabs(target) or not _inside(posixpath.join(posixpath.dirname(name), target)):
                raise NoiseKDError(f"archive {archive}: symlink {name!r} -> {target!r} points outside; refusing")
        elif member.islnk():
            # hard link targets are archive-relative paths
            if posixpath.isabs(member.linkname) or not _inside(member.linkname):
                raise NoiseKDError(
                    f"archive {archive}: hard link {name!r} -> {member.linkname!r} points outside; refusing"
                )
        elif not (member.isfile() or member.isdir()):
            raise NoiseKDError(f"archive {archive}: member {name!r} is a device, fifo or other special file; refusing")
        yield member


def safe_extract_tar(archive: str | os.PathLike, dest: str | os.PathLike, subdir: str | None = None) -> Path:
    """Extract a (possibly compressed) tar archive into the new folder `dest`.

    Members with absolute paths, `..` escapes, links pointing outside, or device/special files are
    refused with a NoiseKDError naming the member.  Extraction goes to a temporary folder beside
    `dest` that is renamed onto `dest` only at the end, so a failed or killed extraction leaves no
    `dest`.  If `subdir` is given, only that top-level folder of the archive becomes `dest` (e.g.
    `CIFAR-10-C.tar` holds `CIFAR-10-C/...`).  `dest` must not exist yet.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise NoiseKDError(f"extraction target {dest} already exists; remove it to extract {archive} again")
    if not archive.is_file():
        raise NoiseKDError(f"archive {archive} does not exist")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                # Members are checked lazily as extractall reaches them: one pass over the stream.
                tar.extractall(tmp, members=_checked_members(tar, archive), **kwargs)
        except NoiseKDError:
            raise
        except _FILTER_ERROR as exc:  # our checks come first; this is the library's second opinion
            raise NoiseKDError(f"archive {archive}: refused by tarfile's data filter: {exc}") from None
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise NoiseKDError(f"archive {archive} is unreadable (truncated or corrupt?): {exc}") from None
        source = tmp
        if subdir is not None:
            source = tmp / subdir
            if not source.is_dir():
                raise NoiseKDError(f"archive {archive} has no top-level folder {subdir!r}")
        os.rename(source, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
