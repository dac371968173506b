"""Checked downloads and safe archive extraction: every dataset file the project fetches comes through here.

A download streams into a temporary file beside its destination and is renamed into place only
once its md5 matches, so a killed or corrupted transfer never leaves a file that looks complete.
Long transfers log progress on the "noisekd" logger (the workflow's rule logs and the CLI's stderr):
one line per 5% of the size the server announces, or per 30 s, never one per chunk.
Archives are extracted into a temporary folder beside the destination and renamed at the end, after
every member has been checked for paths or links that would land outside the destination; the
extracted files get the mode a plain `open`/`mkdir` gives, whatever modes the archive recorded.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import posixpath
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from ..errors import NoiseKDError
from ..io import atomic_path, plain_mode

log = logging.getLogger("noisekd")

_CHUNK = 1 << 20
# tarfile's extraction filters (Python >= 3.11.4); without them only our own checks apply.
_FILTER_ERROR = getattr(tarfile, "FilterError", ())
PROGRESS_STEP = 0.05  # a progress line per 5% of a download whose size is known ...
PROGRESS_SECONDS = 30.0  # ... and at least one per 30 s (the only ones when the size is unknown)
_clock = time.monotonic  # the progress clock (tests replace it)


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


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


class _Progress:
    """Progress lines of one transfer: at each PROGRESS_STEP of `total` and every PROGRESS_SECONDS."""

    def __init__(self, name: str, total: int | None):
        self.name, self.total = name, total
        self.start = self.last = _clock()
        self.step = max(1, int(total * PROGRESS_STEP)) if total else None
        self.next = self.step

    def update(self, done: int) -> None:
        now = _clock()
        at_step = self.step is not None and done >= self.next
        if not at_step and now - self.last < PROGRESS_SECONDS:
            return
        if self.step is not None:
            self.next = (done // self.step + 1) * self.step  # one line even if a chunk spans several steps
        self.last = now
        rate = done / max(now - self.start, 1e-6) / 1e6
        of = f" of {_mb(self.total)} ({100 * done / self.total:.0f}%)" if self.total else ""
        log.info(f"downloading {self.name}: {_mb(done)}{of}, {rate:.1f} MB/s")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _reason(exc: BaseException) -> str:
    """Why a transfer failed, in one line: the HTTP status, or the socket error under a URLError."""
    if isinstance(exc, urllib.error.HTTPError):
        return _one_line(exc)  # "HTTP Error 404: Not Found"
    return _one_line(getattr(exc, "reason", None) or exc or type(exc).__name__)


class _TransferError(NoiseKDError):
    """A transfer that failed (network, HTTP status, short read); `reason` is the cause alone."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def _content_length(response) -> int | None:
    try:
        return int(response.headers["Content-Length"])
    except (KeyError, TypeError, ValueError):
        return None


def download(url: str, dest: str | os.PathLike, md5: str, timeout: float = 60.0) -> Path:
    """Download `url` to `dest`, verifying its md5; nothing is left at `dest` unless it matches.

    Every failure (no network, HTTP error, short transfer, wrong md5) is one NoiseKDError naming
    the URL, `dest` and the md5, and removes the partial file.
    """
    dest = Path(dest)
    digest, done, total = _md5(), 0, None
    request = urllib.request.Request(url, headers={"User-Agent": "noisekd"})
    with atomic_path(dest) as tmp:  # the temporary file is removed on any failure below
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as out:
                total = _content_length(response)
                log.info(f"downloading {url} to {dest}" + (f" ({_mb(total)})" if total else ""))
                progress = _Progress(dest.name, total)
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
                    done += len(chunk)
                    progress.update(done)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = _reason(exc)
            raise _TransferError(
                f"download of {url} to {dest} failed: {reason} (partial file removed; to work offline, "
                f"put a copy with md5 {md5} there)", reason
            ) from None
        if total is not None and done != total:
            reason = f"the transfer ended after {done} of {total} bytes"
            raise _TransferError(f"download of {url} to {dest} failed: {reason} (partial file removed)", reason)
        actual = digest.hexdigest()
        if actual != md5.lower():
            raise NoiseKDError(
                f"download of {url} to {dest}: md5 {actual} does not match the expected {md5} (download removed)"
            )
    log.info(f"downloaded {dest} ({_mb(done)}, md5 {actual} as expected)")
    return dest


def ensure_download(url: str, dest: str | os.PathLike, md5: str, timeout: float = 60.0) -> Path:
    """Download `url` to `dest` unless a file with the right md5 is already there.

    A file already at `dest` with another md5 (a transfer another tool left unfinished, a corrupt
    copy) can never be used: it is removed and downloaded again.  If that fails too (offline, say),
    the one-line error still leads with the bad file and both checksums, not the network error.
    """
    dest = Path(dest)
    if not dest.is_file():
        return download(url, dest, md5, timeout)
    actual = file_md5(dest)
    if actual == md5.lower():
        return dest
    bad = f"{dest}: md5 {actual} does not match the expected {md5}"
    log.warning(f"{bad}; removing it and downloading it again")
    dest.unlink()
    try:
        return download(url, dest, md5, timeout)
    except _TransferError as exc:  # (a wrong md5 of the new copy is download's own line, with both checksums)
        raise NoiseKDError(f"{bad} (file removed), and downloading it again from {url} failed: {exc.reason}") from None


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


def _give_plain_modes(folder: Path) -> None:
    """Give every extracted folder and file the mode a plain mkdir / open gives under the umask.

    Archives record their author's modes (0600 files, 0700 folders are common), and mkdtemp makes
    0700: kept as they are, a dataset fetched for a group would be readable by its fetcher only.
    """
    dir_mode, file_mode, exec_mode = plain_mode(directory=True), plain_mode(), plain_mode(executable=True)
    for dirpath, _, filenames in os.walk(folder):  # symlinked folders are not followed
        os.chmod(dirpath, dir_mode)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):  # chmod would follow it
                os.chmod(path, exec_mode if os.stat(path).st_mode & 0o100 else file_mode)


def safe_extract_tar(archive: str | os.PathLike, dest: str | os.PathLike, subdir: str | None = None) -> Path:
    """Extract a (possibly compressed) tar archive into the new folder `dest`.

    Members with absolute paths, `..` escapes, links pointing outside, or device/special files are
    refused with a NoiseKDError naming the member.  Extraction goes to a temporary folder beside
    `dest` that is renamed onto `dest` only at the end, so a failed or killed extraction leaves no
    `dest`.  If `subdir` is given, only that top-level folder of the archive becomes `dest` (e.g.
    `CIFAR-10-C.tar` holds `CIFAR-10-C/...`).  `dest` must not exist yet.  Extracted folders and
    files get the mode a plain mkdir / open gives (group-readable under the usual umask).
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
        _give_plain_modes(tmp)
        source = tmp
        if subdir is not None:
            source = tmp / subdir
            if not source.is_dir():
                raise NoiseKDError(f"archive {archive} has no top-level folder {subdir!r}")
        os.rename(source, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
