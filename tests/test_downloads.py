"""Downloads that fail clearly: every dataset file comes through `noisekd.sources.download`.

The fixtures are small files in the real formats (CIFAR-10's python pickles in a tar.gz, SVHN's
.mat files, CIFAR-10-C's .npy files in a tar), served from file:// URLs or a local HTTP server.
"Offline" is name resolution failing, as on a compute node without internet.
"""

from __future__ import annotations

import hashlib
import http.server
import importlib
import io
import logging
import os
import pickle
import socket
import stat
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from noisekd.data import ImageData, save_image_data
from noisekd.errors import NoiseKDError
from noisekd.sources import cifar10 as c10
from noisekd.sources import download, load_cifar10, load_cifar10c, load_svhn, safe_extract_tar, svhn
from noisekd.sources.cifar10 import CIFAR10_CLASSES

dl = importlib.import_module("noisekd.sources.download")  # the package's `download` is the function
CIFAR10_RELEASE_MD5 = "c58f30108f718f92721af3b95e74349a"


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def one_line(msg: str) -> str:
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


@pytest.fixture
def offline(monkeypatch):
    """No name resolves and no socket connects: what urllib meets on a node without internet."""

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(socket.socket, "connect", no_dns)


def test_release_urls_and_md5s_are_torchvisions():
    """The tables that replaced torchvision's downloader still agree with torchvision's own."""
    from torchvision.datasets import CIFAR10, SVHN

    assert (c10.CIFAR10_URL, c10.CIFAR10_MD5) == (CIFAR10.url, CIFAR10.tgz_md5)
    assert c10.CIFAR10_ARCHIVE == CIFAR10.filename and c10.BASE_FOLDER == CIFAR10.base_folder
    assert c10.FILE_MD5S == {**dict(CIFAR10.train_list), **dict(CIFAR10.test_list), CIFAR10.meta["filename"]: CIFAR10.meta["md5"]}
    for split, (url, name, md5) in SVHN.split_list.items():
        assert svhn.SVHN_URL + svhn.svhn_filename(split) == url and svhn.SVHN_MD5S[name] == md5


# ---------------------------------------------------------------------------------------------
# Real-format fixtures


def cifar_archive(path: Path, per_batch: int = 4) -> Path:
    """`cifar-10-python.tar.gz`: `cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`,
    dicts with bytes keys pickled at protocol 2, as the release."""
    rng = np.random.default_rng(0)
    files = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        files[name] = pickle.dumps({
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)],
        }, protocol=2)
    files["batches.meta"] = pickle.dumps(
        {b"num_cases_per_batch": per_batch, b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_vis": 3072},
        protocol=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
    return path


def serve_cifar(monkeypatch, tmp_path: Path) -> Path:
    """Point the CIFAR-10 download at a fixture archive; its files' md5s become the expected ones."""
    archive = cifar_archive(tmp_path / "serve" / "cifar-10-python.tar.gz")
    monkeypatch.setattr(c10, "CIFAR10_URL", archive.as_uri())
    monkeypatch.setattr(c10, "CIFAR10_MD5", md5_of(archive))
    with tarfile.open(archive) as tar:
        md5s = {Path(m.name).name: hashlib.md5(tar.extractfile(m).read()).hexdigest() for m in tar if m.isfile()}
    monkeypatch.setattr(c10, "FILE_MD5S", md5s)
    return archive


def write_svhn(folder: Path, split: str, n: int = 5) -> Path:
    """`<split>_32x32.mat`: X (32, 32, 3, N) uint8, y (N, 1) with 10 for the digit 0."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}_32x32.mat"
    scipy.io.savemat(path, {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                            "y": rng.integers(1, 11, (n, 1)).astype(np.uint8)})
    return path


# ---------------------------------------------------------------------------------------------
# 1. CIFAR-10 and SVHN through the checked path


def test_cifar10_download_is_checked_and_parsed_by_us(tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", None)  # its downloader is not used any more
    serve_cifar(monkeypatch, tmp_path)
    root = tmp_path / "data"
    test = load_cifar10(root, "test", download=True)  # verify=True: each extracted file's md5 checked
    assert test.images.shape == (4, 3, 32, 32) and test.classes == CIFAR10_CLASSES
    assert {p.name for p in root.iterdir()} == {"cifar-10-python.tar.gz", "cifar-10-batches-py"}


@pytest.mark.reliability
def test_cifar10_offline_without_the_archive_names_file_and_md5(tmp_path, offline):
    root = tmp_path / "data"
    with pytest.raises(NoiseKDError) as err:
        load_cifar10(root, "train", download=True)
    msg = one_line(str(err.value))
    assert str(root / "cifar-10-python.tar.gz") in msg and CIFAR10_RELEASE_MD5 in msg
    assert "Temporary failure in name resolution" in msg and "partial file removed" in msg
    assert list(root.iterdir()) == []  # nothing half-written


@pytest.mark.reliability
def test_cifar10_offline_with_a_bad_archive_says_its_md5_is_wrong(tmp_path, offline):
    """A present archive of the wrong md5 (an unfinished transfer, a corrupt copy) is removed and
    fetched again; offline, the line leads with the archive and both checksums, not the network."""
    root = tmp_path / "data"
    bad = cifar_archive(root / "cifar-10-python.tar.gz")
    found = md5_of(bad)
    with pytest.raises(NoiseKDError) as err:
        load_cifar10(root, "test", download=True)
    msg = one_line(str(err.value))
    assert msg.startswith(f"{bad}: md5 {found} does not match the expected {CIFAR10_RELEASE_MD5} (file removed)")
    assert msg.endswith(f"downloading it again from {c10.CIFAR10_URL} failed: [Errno -3] Temporary failure in name resolution")
    assert list(root.iterdir()) == []


@pytest.mark.reliability
def test_cifar10_bad_archive_is_replaced_when_online(tmp_path, monkeypatch, caplog):
    archive = serve_cifar(monkeypatch, tmp_path)
    root = tmp_path / "data"
    root.mkdir()
    (root / "cifar-10-python.tar.gz").write_bytes(archive.read_bytes()[:1000])  # a transfer cut short
    with caplog.at_level(logging.INFO, logger="noisekd"):
        assert len(load_cifar10(root, "test", download=True)) == 4
    assert "does not match the expected" in caplog.text and "downloading it again" in caplog.text
    assert md5_of(root / "cifar-10-python.tar.gz") == md5_of(archive)


@pytest.mark.reliability
def test_cifar10_served_archive_with_the_wrong_md5_is_removed(tmp_path, monkeypatch):
    archive = serve_cifar(monkeypatch, tmp_path)
    monkeypatch.setattr(c10, "CIFAR10_MD5", "0" * 32)
    root = tmp_path / "data"
    with pytest.raises(NoiseKDError) as err:
        load_cifar10(root, "test", download=True)
    msg = one_line(str(err.value))
    assert f"md5 {md5_of(archive)} does not match the expected {'0' * 32}" in msg and "cifar-10-python.tar.gz" in msg
    assert list(root.iterdir()) == []


@pytest.mark.reliability
def test_cifar10_extracted_file_with_the_wrong_md5(tmp_path, monkeypatch):
    serve_cifar(monkeypatch, tmp_path)
    root = tmp_path / "data"
    load_cifar10(root, "test", download=True)
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(b"tampered")
    with pytest.raises(NoiseKDError) as err:
        load_cifar10(root, "test", download=True)
    msg = one_line(str(err.value))
    assert "test_batch: md5 " + hashlib.md5(b"tampered").hexdigest() in msg and c10.FILE_MD5S["test_batch"] in msg


def test_svhn_download_is_checked(tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "SVHN", None)
    served = write_svhn(tmp_path / "serve", "test")
    monkeypatch.setattr(svhn, "SVHN_URL", served.parent.as_uri() + "/")
    monkeypatch.setitem(svhn.SVHN_MD5S, "test_32x32.mat", md5_of(served))
    root = tmp_path / "data"
    assert len(load_svhn(root, "test", download=True)) == 5
    (root / "test_32x32.mat").write_bytes(b"corrupt")  # a bad copy is replaced, not parsed
    assert len(load_svhn(root, "test", download=True)) == 5 and md5_of(root / "test_32x32.mat") == md5_of(served)


@pytest.mark.reliability
def test_svhn_offline_with_a_bad_file_names_it_and_both_md5s(tmp_path, offline):
    root = tmp_path / "data"
    bad = write_svhn(root, "train")
    found, expected = md5_of(bad), svhn.SVHN_MD5S["train_32x32.mat"]
    with pytest.raises(NoiseKDError) as err:
        load_svhn(root, "train", download=True)
    msg = one_line(str(err.value))
    assert msg.startswith(f"{bad}: md5 {found} does not match the expected {expected} (file removed)")
    assert "http://ufldl.stanford.edu/housenumbers/train_32x32.mat" in msg and not bad.exists()


@pytest.mark.reliability
def test_command_line_offline_is_one_line(tmp_path, offline, capsys):
    """`python -m noisekd evaluate` on SVHN with no network: one line, not torchvision's URLError traceback."""
    from noisekd.__main__ import main
    from noisekd.checkpoints import save_model
    from noisekd.models import WRNSpec, build_model

    ckpt = tmp_path / "model.pt"
    save_model(ckpt, build_model(WRNSpec(10, 1), 0))
    out = tmp_path / "rows.parquet"
    assert main(["evaluate", str(ckpt), "--dataset", "svhn", "--data-dir", str(tmp_path / "data"),
                 "--out", str(out), "--device", "cpu", "--corruptions", "none"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: download of http://ufldl.stanford.edu/")
    assert svhn.SVHN_MD5S["test_32x32.mat"] in err and not out.exists()


# ---------------------------------------------------------------------------------------------
# 2. CIFAR-10-C files of the wrong size


def write_cifar10c(folder: Path, shape=(32, 32, 3), dtype=np.uint8, rows: int = 2, names=("fog",)) -> None:
    """`labels.npy` (5 * rows,) and `<corruption>.npy` (5 * rows, H, W, C), as the release (N = 50000)."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "labels.npy", np.tile(np.arange(rows, dtype=np.int64) % 10, 5))
    for name in names:
        np.save(folder / f"{name}.npy", np.zeros((5 * rows, *shape), dtype))


@pytest.mark.reliability
@pytest.mark.parametrize("shape, dtype, found", [
    ((28, 28, 3), np.uint8, "uint8 (10, 28, 28, 3)"),
    ((32, 32, 1), np.uint8, "uint8 (10, 32, 32, 1)"),
    ((32, 32, 3), np.float32, "float32 (10, 32, 32, 3)"),
])
def test_cifar10c_wrong_image_size_names_the_file(tmp_path, shape, dtype, found):
    write_cifar10c(tmp_path / "CIFAR-10-C", shape, dtype)
    with pytest.raises(NoiseKDError) as err:
        load_cifar10c(tmp_path, "fog", 1)
    msg = one_line(str(err.value))
    assert str(tmp_path / "CIFAR-10-C" / "fog.npy") in msg and "expected uint8 (10, 32, 32, 3)" in msg and found in msg


@pytest.mark.reliability
def test_cifar10c_wrong_size_stops_the_stack_in_one_line(tmp_path):
    """The workflow's prepare_corruptions used to end in a numpy broadcast traceback here."""
    from noisekd import pipeline
    from noisekd.corruptions import CORRUPTIONS
    from noisekd.settings import Runtime

    write_cifar10c(tmp_path / "data" / "cifar10c" / "CIFAR-10-C", (28, 28, 3), names=CORRUPTIONS)
    test = ImageData(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.arange(2), CIFAR10_CLASSES)
    save_image_data(test, tmp_path / "test.npz")
    out = tmp_path / "stack.npy"
    with pytest.raises(NoiseKDError, match=r"CIFAR-10-C file .*gaussian_noise\.npy: expected uint8 \(10, 32, 32, 3\)"):
        pipeline.prepare_corruptions({"corruptions": {"source": "released"}}, Runtime(data_dir=str(tmp_path / "data")),
                                     str(tmp_path / "test.npz"), str(out))
    assert not out.exists() and not list(tmp_path.glob(".stack.npy.*"))


def test_cifar10c_of_another_test_set_size_is_named(tmp_path):
    """Right image size, but 2 images per severity against a test set of 3: one line naming both."""
    from noisekd import pipeline
    from noisekd.corruptions import CORRUPTIONS
    from noisekd.settings import Runtime

    write_cifar10c(tmp_path / "data" / "cifar10c" / "CIFAR-10-C", names=CORRUPTIONS)
    test = ImageData(torch.zeros(3, 3, 32, 32, dtype=torch.uint8), torch.arange(3), CIFAR10_CLASSES)
    save_image_data(test, tmp_path / "test.npz")
    out = tmp_path / "stack.npy"
    with pytest.raises(NoiseKDError, match=r"CIFAR-10-C gaussian_noise \(severity 1, under .*cifar10c\) holds "
                                           r"\(2, 3, 32, 32\) images .*test\.npz test set's \(3, 3, 32, 32\)") as err:
        pipeline.prepare_corruptions({"corruptions": {"source": "released"}}, Runtime(data_dir=str(tmp_path / "data")),
                                     str(tmp_path / "test.npz"), str(out))
    assert "\n" not in str(err.value) and not out.exists()


# ---------------------------------------------------------------------------------------------
# 5. Extracted files get the mode of a plain open / mkdir


@pytest.mark.reliability
@pytest.mark.parametrize("umask", [0o027, 0o022])
def test_extracted_files_are_group_readable(tmp_path, umask):
    archive = tmp_path / "private.tar"
    with tarfile.open(archive, "w") as tar:
        for name, mode, data in [("top", 0o700, None), ("top/sub", 0o700, None), ("top/sub/a.npy", 0o600, b"a"),
                                 ("top/b.png", 0o600, b"b"), ("top/run.sh", 0o700, b"#!/bin/sh\n")]:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if data is None:
                info.type = tarfile.DIRTYPE
            else:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    old = os.umask(umask)
    try:
        for dest, subdir in [(tmp_path / "whole", None), (tmp_path / "part", "top")]:
            safe_extract_tar(archive, dest, subdir=subdir)
            inside = dest / "top" if subdir is None else dest
            modes = {p.relative_to(dest).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [dest, *dest.rglob("*")]}
            for path, mode in modes.items():
                is_dir = (dest / path).is_dir()
                plain = (0o777 if is_dir or path.endswith("run.sh") else 0o666) & ~umask
                assert mode == plain, (path, oct(mode))
                assert mode & stat.S_IRGRP and (not is_dir or mode & stat.S_IXGRP)  # the group can read and enter
            assert (inside / "sub" / "a.npy").read_bytes() == b"a"
    finally:
        os.umask(old)


# ---------------------------------------------------------------------------------------------
# 6. Progress of long downloads in the log


def progress_lines(caplog, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"downloading {name}:")]


def test_download_progress_every_five_percent(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(dl, "_CHUNK", 1000)  # 400 chunks: one line per chunk would be spam
    src = tmp_path / "big.tar"
    src.write_bytes(os.urandom(400_000))
    with caplog.at_level(logging.INFO, logger="noisekd"):
        download(src.as_uri(), tmp_path / "out" / "big.tar", md5_of(src))
    lines = progress_lines(caplog, "big.tar")
    assert len(lines) == 20, lines  # 5%, 10%, ... 100%
    assert lines[0].startswith("downloading big.tar: 0.0 MB of 0.4 MB (5%)") and "(100%)" in lines[-1]
    assert any(m.startswith(f"downloading {src.as_uri()} to ") and "(0.4 MB)" in m for m in caplog.messages)


class _Handler(http.server.BaseHTTPRequestHandler):
    """/sized: Content-Length sent; /unsized: no length, the body ends when the connection closes;
    /short: a length of 2000 but 500 bytes; anything else: 404."""

    body = b"x" * 50_000

    def do_GET(self):
        if self.path not in ("/sized", "/unsized", "/short"):
            self.send_error(404)
            return
        self.send_response(200)
        body = self.body[:500] if self.path == "/short" else self.body
        if self.path != "/unsized":
            self.send_header("Content-Length", "2000" if self.path == "/short" else str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        for start in range(0, len(body), 5000):
            self.wfile.write(body[start:start + 5000])
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_progress_over_http(tmp_path, monkeypatch, caplog, server):
    monkeypatch.setattr(dl, "_CHUNK", 1000)
    md5 = hashlib.md5(_Handler.body).hexdigest()
    with caplog.at_level(logging.INFO, logger="noisekd"):
        download(f"{server}/sized", tmp_path / "sized.bin", md5)
    sized = progress_lines(caplog, "sized.bin")
    assert len(sized) == 20 and sized[-1].startswith("downloading sized.bin: ") and "(100%)" in sized[-1]
    # Unknown size: a line per PROGRESS_SECONDS only (the clock moves 10 s per chunk here).
    ticks = iter(range(0, 10_000, 10))
    monkeypatch.setattr(dl, "_clock", lambda: next(ticks))
    with caplog.at_level(logging.INFO, logger="noisekd"):
        download(f"{server}/unsized", tmp_path / "unsized.bin", md5)
    unsized = progress_lines(caplog, "unsized.bin")
    assert 10 <= len(unsized) <= 20 and all(" of " not in line for line in unsized)  # 50 chunks, 10 s each, 30 s apart
    assert (tmp_path / "unsized.bin").read_bytes() == _Handler.body


@pytest.mark.reliability
def test_download_http_failures_are_one_line(tmp_path, server):
    with pytest.raises(NoiseKDError) as err:
        download(f"{server}/missing", tmp_path / "a.bin", "1" * 32)
    assert "HTTP Error 404" in one_line(str(err.value)) and "a.bin" in str(err.value) and "1" * 32 in str(err.value)
    with pytest.raises(NoiseKDError) as err:
        download(f"{server}/short", tmp_path / "b.bin", "1" * 32)
    assert "b.bin" in one_line(str(err.value)) and ("500 of 2000 bytes" in str(err.value) or "ncomplete" in str(err.value))
    assert list(tmp_path.iterdir()) == []
