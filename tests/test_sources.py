"""Dataset sources on small files written in the exact real formats; no network access."""

from __future__ import annotations

import hashlib
import io
import pickle
import socket
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from noisekd.data import ImageData, load_image_data, save_image_data
from noisekd.errors import NoiseKDError
from noisekd.sources import (
    CIFAR10_CLASSES,
    CIFAR10C_CORRUPTIONS,
    check_md5,
    download,
    download_cifar10c,
    download_cinic10,
    file_md5,
    load_cifar10,
    load_cifar10c,
    load_cinic_imagenet,
    load_digits,
    load_svhn,
    prepare_dataset,
    prepare_ood,
    render_printed_digits,
    safe_extract_tar,
)
from noisekd.sources.digits import digits_split_indices


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any socket connection in these tests is a bug."""

    def refuse(*args, **kwargs):
        raise AssertionError("test tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def no_leftovers(folder: Path, allowed: set[str]) -> None:
    assert {p.name for p in folder.iterdir()} == allowed


# ---------------------------------------------------------------------------------------------
# download / check_md5 / safe_extract_tar


def test_download_file_url_verifies_md5(tmp_path):
    src = tmp_path / "payload.bin"
    src.write_bytes(b"noisekd" * 1000)
    dest = tmp_path / "out" / "copy.bin"
    assert download(src.as_uri(), dest, md5_of(src)) == dest
    assert dest.read_bytes() == src.read_bytes()
    no_leftovers(dest.parent, {"copy.bin"})


@pytest.mark.reliability
def test_download_wrong_md5_removes_partial_file(tmp_path):
    src = tmp_path / "payload.bin"
    src.write_bytes(b"x" * 5000)
    dest = tmp_path / "out" / "copy.bin"
    wrong = "0" * 32
    with pytest.raises(NoiseKDError) as err:
        download(src.as_uri(), dest, wrong)
    msg = str(err.value)
    assert "copy.bin" in msg and wrong in msg and md5_of(src) in msg and "\n" not in msg
    no_leftovers(dest.parent, set())  # neither dest nor its temporary file


def test_download_missing_source(tmp_path):
    with pytest.raises(NoiseKDError, match="missing.bin"):
        download((tmp_path / "missing.bin").as_uri(), tmp_path / "dest.bin", "0" * 32)
    assert not (tmp_path / "dest.bin").exists()


def test_check_md5(tmp_path):
    f = tmp_path / "f.bin"
    f.write_bytes(b"abc")
    check_md5(f, hashlib.md5(b"abc").hexdigest())
    assert file_md5(f) == hashlib.md5(b"abc").hexdigest()
    with pytest.raises(NoiseKDError, match="f.bin.*" + "1" * 32):
        check_md5(f, "1" * 32)
    with pytest.raises(NoiseKDError, match="nope.bin"):
        check_md5(tmp_path / "nope.bin", "1" * 32)


def add_member(tar: tarfile.TarFile, name: str, data: bytes = b"", **fields) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if data else None)


def make_tar(path: Path, members: list[tuple[str, bytes, dict]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data, fields in members:
            add_member(tar, name, data, **fields)
    return path


def test_safe_extract_tar_ok(tmp_path):
    archive = make_tar(
        tmp_path / "a.tar.gz",
        [
            ("top/x.txt", b"hello", {}),
            ("top/sub/y.txt", b"world", {}),
            ("top/link", b"", {"type": tarfile.SYMTYPE, "linkname": "x.txt"}),
        ],
        "w:gz",
    )
    dest = safe_extract_tar(archive, tmp_path / "out")
    assert (dest / "top" / "x.txt").read_bytes() == b"hello"
    assert (dest / "top" / "sub" / "y.txt").read_bytes() == b"world"
    # subdir: one top-level folder becomes the destination
    dest2 = safe_extract_tar(archive, tmp_path / "out2", subdir="top")
    assert (dest2 / "sub" / "y.txt").read_bytes() == b"world"
    no_leftovers(tmp_path, {"a.tar.gz", "out", "out2"})
    with pytest.raises(NoiseKDError, match="already exists"):
        safe_extract_tar(archive, tmp_path / "out")


@pytest.mark.parametrize(
    "bad, fields",
    [
        ("../escape.txt", {}),
        ("good/../../escape.txt", {}),
        ("/tmp/noisekd-absolute-escape.txt", {}),
        ("evil-symlink", {"type": tarfile.SYMTYPE, "linkname": "../../outside"}),
        ("evil-abs-symlink", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}),
        ("evil-hardlink", {"type": tarfile.LNKTYPE, "linkname": "../outside"}),
        ("evil-device", {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}),
        ("evil-fifo", {"type": tarfile.FIFOTYPE}),
    ],
)
@pytest.mark.reliability
def test_safe_extract_tar_refuses(tmp_path, bad, fields):
    data = b"" if fields else b"pwned"
    # A good member first: the refusal must still leave nothing behind.
    archive = make_tar(tmp_path / "bad.tar", [("fine.txt", b"ok", {}), (bad, data, fields)])
    work = tmp_path / "work"
    work.mkdir()
    dest = work / "out"
    with pytest.raises(NoiseKDError) as err:
        safe_extract_tar(archive, dest)
    assert bad in str(err.value)
    assert not dest.exists()
    no_leftovers(work, set())  # no temporary folder, no escaped file
    assert not (tmp_path / "escape.txt").exists()
    assert not Path("/tmp/noisekd-absolute-escape.txt").exists()


@pytest.mark.reliability
def test_safe_extract_truncated_archive(tmp_path):
    archive = make_tar(tmp_path / "t.tar.gz", [("a.bin", bytes(range(256)) * 400, {})], "w:gz")
    archive.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(NoiseKDError, match="t.tar.gz"):
        safe_extract_tar(archive, tmp_path / "out")
    no_leftovers(tmp_path, {"t.tar.gz"})


# ---------------------------------------------------------------------------------------------
# CIFAR-10


def write_cifar(root: Path, per_batch: int = 6, seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    """The torchvision layout `cifar-10-batches-py/`, files pickled like the originals."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        written[name] = (data, labels)
    meta = {b"num_cases_per_batch": per_batch, b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return written


def test_cifar10_parse_channel_order(tmp_path):
    written = write_cifar(tmp_path)
    test = load_cifar10(tmp_path, "test", verify=False)
    data, labels = written["test_batch"]
    assert test.images.shape == (6, 3, 32, 32) and test.images.dtype == torch.uint8
    assert test.classes == CIFAR10_CLASSES
    assert test.labels.tolist() == labels
    # Rows are R(1024) G(1024) B(1024), each plane row-major.
    for n, c, y, x in [(0, 0, 0, 0), (1, 1, 5, 7), (2, 2, 31, 31), (5, 2, 0, 31), (3, 0, 31, 0)]:
        assert int(test.images[n, c, y, x]) == int(data[n, c * 1024 + y * 32 + x])
    train = load_cifar10(tmp_path, "train", verify=False)
    assert len(train) == 30
    expected = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert torch.equal(train.images.reshape(30, 3072), torch.from_numpy(expected))
    assert train.labels.tolist() == [v for i in range(1, 6) for v in written[f"data_batch_{i}"][1]]
    assert train.meta["source"] == "cifar10" and train.meta["split"] == "train"


def _py2_str(b: bytes) -> bytes:
    """A Python 2 `str` in a pickle (SHORT_BINSTRING / BINSTRING), as in the original files."""
    return (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<i", len(b))) + b


def _py2_int(v: int) -> bytes:
    return b"J" + struct.pack("<i", v)


def py2_pickle(data: np.ndarray, labels: list[int], label_names: list[bytes] | None = None) -> bytes:
    """Protocol-2 pickle as Python 2 / numpy 1.x wrote CIFAR-10: numpy.core.multiarray, str data."""
    n, d = data.shape
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _py2_str(b"b") + b"\x87R"
        + b"(K\x01" + _py2_int(n) + _py2_int(d) + b"\x86"
        + b"cnumpy\ndtype\n" + _py2_str(b"u1") + b"K\x00K\x01\x87R"
        + b"(K\x03" + _py2_str(b"|") + b"NNN" + _py2_int(-1) + _py2_int(-1) + b"K\x00tb"
        + b"\x89" + _py2_str(data.tobytes()) + b"tb"
    )  # fmt: skip
    body = _py2_str(b"data") + array + _py2_str(b"labels") + b"](" + b"".join(_py2_int(v) for v in labels) + b"e"
    if label_names is not None:
        body += _py2_str(b"label_names") + b"](" + b"".join(_py2_str(c) for c in label_names) + b"e"
    return b"\x80\x02}(" + body + b"u."


def test_cifar10_python2_numpy1_pickles(tmp_path):
    written = write_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    data, labels = written["test_batch"]
    (folder / "test_batch").write_bytes(py2_pickle(data, labels))
    names = [c.encode() for c in CIFAR10_CLASSES]
    (folder / "batches.meta").write_bytes(py2_pickle(np.zeros((0, 3072), np.uint8), [], names))
    test = load_cifar10(tmp_path, "test", verify=False)
    assert torch.equal(test.images.reshape(-1, 3072), torch.from_numpy(data))
    assert test.labels.tolist() == labels and test.classes == CIFAR10_CLASSES


def test_cifar10_verify_md5_refuses_fake_files(tmp_path):
    write_cifar(tmp_path)
    with pytest.raises(NoiseKDError, match="md5"):
        load_cifar10(tmp_path, "test", verify=True)


def test_cifar10_missing_files(tmp_path):
    with pytest.raises(NoiseKDError, match="cifar-10-batches-py.*download=True"):
        load_cifar10(tmp_path, "train")
    with pytest.raises(NoiseKDError, match="split"):
        load_cifar10(tmp_path, "valid")


@pytest.mark.reliability
def test_cifar10_truncated_pickle(tmp_path):
    write_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(NoiseKDError, match="test_batch.*truncated"):
        load_cifar10(tmp_path, "test", verify=False)


@pytest.mark.reliability
def test_cifar10_refuses_code_in_pickle(tmp_path):
    write_cifar(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pickle code ran",))

    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    with pytest.raises(NoiseKDError, match="test_batch.*not allowed"):
        load_cifar10(tmp_path, "test", verify=False)


def cifar_archive(path: Path, per_batch: int = 6) -> tuple[Path, dict]:
    """A `cifar-10-python.tar.gz` in the release's layout (`cifar-10-batches-py/` and its pickles)."""
    written = write_cifar(path.parent / "src", per_batch)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(path.parent / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return path, written


def test_cifar10_download_extracts_the_checked_archive(tmp_path, monkeypatch):
    import torchvision.datasets

    import noisekd.sources.cifar10 as c10

    def refuse(*args, **kwargs):
        raise AssertionError("torchvision's downloader must not be used")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", refuse)
    archive, written = cifar_archive(tmp_path / "serve" / "cifar-10-python.tar.gz")
    monkeypatch.setattr(c10, "CIFAR10_URL", archive.as_uri())
    monkeypatch.setattr(c10, "CIFAR10_MD5", md5_of(archive))
    root = tmp_path / "root"
    data = load_cifar10(root, "test", download=True, verify=False)
    assert data.labels.tolist() == written["test_batch"][1] and len(data) == 6
    no_leftovers(root, {"cifar-10-python.tar.gz", "cifar-10-batches-py"})
    archive.unlink()
    assert len(load_cifar10(root, "train", download=True, verify=False)) == 30  # extracted: no second download


# ---------------------------------------------------------------------------------------------
# SVHN


def write_svhn(root: Path, split: str, n: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = np.array([[10], [1], [2], [10], [9], [5], [3]][:n], dtype=np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / f"{split}_32x32.mat", {"X": x, "y": y})
    return x, y


def test_svhn_parse_and_zero_label(tmp_path):
    x, _ = write_svhn(tmp_path, "test")
    data = load_svhn(tmp_path, "test", verify=False)
    assert data.images.shape == (7, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.labels.tolist() == [0, 1, 2, 0, 9, 5, 3]
    assert data.classes == tuple("0123456789")
    for n, c, h, w in [(0, 0, 0, 0), (1, 2, 3, 4), (6, 1, 31, 0), (3, 2, 17, 29)]:
        assert int(data.images[n, c, h, w]) == int(x[h, w, c, n])


@pytest.mark.reliability
def test_svhn_truncated_and_missing(tmp_path):
    write_svhn(tmp_path, "train")
    path = tmp_path / "train_32x32.mat"
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(NoiseKDError, match="train_32x32.mat"):
        load_svhn(tmp_path, "train", verify=False)
    with pytest.raises(NoiseKDError, match="test_32x32.mat.*download=True"):
        load_svhn(tmp_path, "test")


def test_svhn_verify_and_download(tmp_path, monkeypatch):
    from noisekd.sources import svhn

    write_svhn(tmp_path / "serve", "train")
    monkeypatch.setattr(svhn, "SVHN_URL", (tmp_path / "serve").as_uri() + "/")
    monkeypatch.setitem(svhn.SVHN_MD5S, "train_32x32.mat", md5_of(tmp_path / "serve" / "train_32x32.mat"))
    assert len(load_svhn(tmp_path / "root", "train", download=True)) == 7
    monkeypatch.undo()  # the release's md5 again: the small file is not the release
    with pytest.raises(NoiseKDError, match="train_32x32.mat.*md5"):
        load_svhn(tmp_path / "root", "train", verify=True)


# ---------------------------------------------------------------------------------------------
# CINIC-10


def cinic_png(cls: int, idx: int, cifar: bool) -> np.ndarray:
    """A 32x32 RGB image whose pixel (0, 0) says which file it is."""
    rng = np.random.default_rng([cls, idx, int(cifar)])
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    img[0, 0] = (cls, idx, 255 if cifar else 0)
    return img


def write_cinic(folder: Path, per_class: int = 6, splits=("test", "valid")) -> None:
    """`{split}/{class}/n..._....png` plus cifar10-*.png copies; one grayscale, one palette PNG."""
    for split in splits:
        for k, cls in enumerate(CIFAR10_CLASSES):
            d = folder / split / cls
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(cinic_png(k, i, False)).save(d / f"n0{k}12345_{1000 + i}.png")
            for i in range(2):
                Image.fromarray(cinic_png(k, i, True)).save(d / f"cifar10-{split}-{k * 10 + i}.png")
    # grayscale and palette images are converted to RGB
    Image.fromarray(np.full((32, 32), 77, np.uint8), "L").save(folder / "test" / "bird" / "n09999999_1.png")
    Image.fromarray(cinic_png(3, 0, False)).convert("P").save(folder / "test" / "cat" / "n09999999_2.png")


def test_cinic_tar_download_extract_and_exclude(tmp_path):
    src = tmp_path / "src"
    write_cinic(src)
    archive = tmp_path / "CINIC-10.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("test", "valid"):
            tar.add(src / split, arcname=split)
    md5 = md5_of(archive)
    check_md5(archive, md5)
    with pytest.raises(NoiseKDError, match="CINIC-10.tar.gz"):
        check_md5(archive, "6ee4d0c996905fe93221de577967a372")  # the real archive's md5

    root = tmp_path / "root"
    download_cinic10(root, url=archive.as_uri(), md5=md5)
    no_leftovers(root, {"CINIC-10.tar.gz", "CINIC-10"})
    data = load_cinic_imagenet(root, split="test", per_class=None)
    assert isinstance(data, ImageData) and data.classes == CIFAR10_CLASSES
    counts = torch.bincount(data.labels, minlength=10).tolist()
    assert counts == [6, 6, 7, 7, 6, 6, 6, 6, 6, 6]  # bird and cat have the extra grey/palette file
    assert data.images.shape == (62, 3, 32, 32)
    first = data.images[:, :, 0, 0]
    assert not (first[:, 2] == 255).any()  # no cifar10-* file was used
    # pixels and labels match the files: image k*6+i (for classes before bird) is class k, file i
    for k in range(2):
        for i in range(6):
            assert torch.equal(data.images[k * 6 + i].permute(1, 2, 0), torch.from_numpy(cinic_png(k, i, False)))
            assert int(data.labels[k * 6 + i]) == k
    grey = data.images[data.labels == 2][-1]
    assert (grey == 77).all()
    palette = data.images[data.labels == 3][-1].permute(1, 2, 0).numpy()
    expected = np.asarray(Image.fromarray(cinic_png(3, 0, False)).convert("P").convert("RGB"))
    assert np.array_equal(palette, expected)
    valid = load_cinic_imagenet(root, split="valid", per_class=None)
    assert len(valid) == 60


def test_cinic_seeded_subset(tmp_path):
    write_cinic(tmp_path / "CINIC-10", splits=("test",))
    a = load_cinic_imagenet(tmp_path, per_class=3, seed=0)
    b = load_cinic_imagenet(tmp_path, per_class=3, seed=0)
    c = load_cinic_imagenet(tmp_path, per_class=3, seed=1)
    assert len(a) == 30 and torch.bincount(a.labels).tolist() == [3] * 10
    assert torch.equal(a.images, b.images) and a.meta == b.meta
    assert not torch.equal(a.images, c.images) and a.meta["files_sha256"] != c.meta["files_sha256"]
    assert a.meta["seed"] == 0 and a.meta["per_class"] == 3 and a.meta["split"] == "test"
    # a smaller selection is part of a larger one with the same seed
    small = load_cinic_imagenet(tmp_path, per_class=2, seed=0)
    ids = lambda d: {tuple(v) for v in d.images[:, :, 0, 0].tolist()}
    assert ids(small) <= ids(a)
    with pytest.raises(NoiseKDError, match="requested"):
        load_cinic_imagenet(tmp_path, per_class=100)
    # provenance survives the workflow's storage format
    save_image_data(a, tmp_path / "cinic.npz")
    stored = load_image_data(tmp_path / "cinic.npz")
    assert stored.meta == a.meta and torch.equal(stored.images, a.images) and stored.classes == a.classes


@pytest.mark.reliability
@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_cinic_unreadable_png(tmp_path, kind):
    write_cinic(tmp_path / "CINIC-10", splits=("test",))
    bad = tmp_path / "CINIC-10" / "test" / "dog" / "n05555555_7.png"
    if kind == "garbage":
        bad.write_bytes(b"not a png at all")
    else:
        Image.fromarray(cinic_png(5, 7, False)).save(bad)
        bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(NoiseKDError, match="n05555555_7.png"):
        load_cinic_imagenet(tmp_path, per_class=None)


def test_cinic_missing(tmp_path):
    with pytest.raises(NoiseKDError, match="CINIC-10.*test.*download=True"):
        load_cinic_imagenet(tmp_path)


# ---------------------------------------------------------------------------------------------
# CIFAR-10-C


def write_cifar10c(folder: Path, rows: int = 4, names=("gaussian_noise", "fog")) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    np.save(folder / "labels.npy", np.tile(rng.integers(0, 10, rows).astype(np.uint8), 5))
    arrays = {}
    for name in names:
        arrays[name] = rng.integers(0, 256, (5 * rows, 32, 32, 3), dtype=np.uint8)
        np.save(folder / f"{name}.npy", arrays[name])
    return arrays


def test_cifar10c_severity_rows(tmp_path):
    arrays = write_cifar10c(tmp_path / "CIFAR-10-C")
    labels = np.load(tmp_path / "CIFAR-10-C" / "labels.npy")
    for severity in (1, 3, 5):
        data = load_cifar10c(tmp_path, "gaussian_noise", severity)
        rows = slice((severity - 1) * 4, severity * 4)
        assert data.images.shape == (4, 3, 32, 32)
        assert torch.equal(data.images, torch.from_numpy(arrays["gaussian_noise"][rows].transpose(0, 3, 1, 2).copy()))
        assert data.labels.tolist() == labels[rows].tolist() and data.labels.dtype == torch.int64
        assert data.meta == {"source": "cifar10c", "corruption": "gaussian_noise", "severity": severity}
    fog = load_cifar10c(tmp_path, "fog", 2)
    assert int(fog.images[1, 2, 3, 4]) == int(arrays["fog"][5, 3, 4, 2])


def test_cifar10c_errors(tmp_path):
    write_cifar10c(tmp_path / "CIFAR-10-C")
    assert len(CIFAR10C_CORRUPTIONS) == 19
    with pytest.raises(NoiseKDError, match="gaussian_noise.*saturate"):
        load_cifar10c(tmp_path, "rain", 1)
    with pytest.raises(NoiseKDError, match="severity"):
        load_cifar10c(tmp_path, "fog", 6)
    with pytest.raises(NoiseKDError, match="snow.npy"):
        load_cifar10c(tmp_path, "snow", 1)
    path = tmp_path / "CIFAR-10-C" / "fog.npy"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(NoiseKDError, match="fog.npy.*truncated"):
        load_cifar10c(tmp_path, "fog", 1)
    path.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(NoiseKDError, match="fog.npy"):
        load_cifar10c(tmp_path, "fog", 1)


def test_cifar10c_download_tar(tmp_path):
    arrays = write_cifar10c(tmp_path / "src" / "CIFAR-10-C", names=("saturate",))
    archive = tmp_path / "CIFAR-10-C.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "src" / "CIFAR-10-C", arcname="CIFAR-10-C")
    root = tmp_path / "root"
    download_cifar10c(root, url=archive.as_uri(), md5=md5_of(archive))
    data = load_cifar10c(root, "saturate", 4)
    assert torch.equal(data.images, torch.from_numpy(arrays["saturate"][12:16].transpose(0, 3, 1, 2).copy()))


def test_released_corruptions_fetch_then_stack(tmp_path, monkeypatch):
    """fetch_corruptions (a local job) downloads; prepare_corruptions (a cluster job) only reads the files."""
    import json

    from noisekd import pipeline
    from noisekd.corruptions import CORRUPTIONS
    from noisekd.settings import Runtime

    arrays = write_cifar10c(tmp_path / "src" / "CIFAR-10-C", names=CORRUPTIONS)
    archive = tmp_path / "CIFAR-10-C.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "src" / "CIFAR-10-C", arcname="CIFAR-10-C")
    labels = torch.from_numpy(np.load(tmp_path / "src" / "CIFAR-10-C" / "labels.npy")[:4].astype(np.int64))
    test = ImageData(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), labels, tuple("abcdefghij"))
    save_image_data(test, tmp_path / "test.npz")
    settings = {"corruptions": {"source": "released"}}
    data_dir = tmp_path / "data"
    runtime = Runtime(data_dir=str(data_dir))
    with pytest.raises(NoiseKDError, match="CIFAR-10-C file .*labels.npy is missing"):  # nothing fetched yet
        pipeline.prepare_corruptions(settings, runtime, str(tmp_path / "test.npz"), str(tmp_path / "c.npy"))
    assert not (tmp_path / "c.npy").exists()
    import noisekd.sources.cifar10c as c10c
    monkeypatch.setattr(c10c, "CIFAR10C_URL", archive.as_uri())
    monkeypatch.setattr(c10c, "CIFAR10C_MD5", md5_of(archive))
    pipeline.fetch_corruptions(runtime, str(tmp_path / "fetched.json"))
    assert json.loads((tmp_path / "fetched.json").read_text())["folder"] == str(data_dir / "cifar10c" / "CIFAR-10-C")
    pipeline.prepare_corruptions(settings, runtime, str(tmp_path / "test.npz"), str(tmp_path / "c.npy"))
    stack = np.load(tmp_path / "c.npy")
    assert stack.shape == (19, 5, 4, 3, 32, 32)
    k = CORRUPTIONS.index("fog")
    assert np.array_equal(stack[k, 2], arrays["fog"][8:12].transpose(0, 3, 1, 2))

    # Only CIFAR-10 has released corruptions: another dataset asking for them is refused at parse time.
    from noisekd.config import load_config
    from noisekd.plan import Plan

    config = load_config("config.yaml")
    config["datasets"]["svhn"]["corruptions"] = {"source": "released"}
    with pytest.raises(NoiseKDError, match="datasets.svhn.corruptions.source: 'released' exists only for cifar10"):
        Plan(config)


# ---------------------------------------------------------------------------------------------
# digits


def test_digits_split():
    from sklearn.datasets import load_digits as sklearn_digits

    target = sklearn_digits().target
    train_idx, test_idx = digits_split_indices(0.2, seed=0)
    assert set(train_idx.tolist()).isdisjoint(test_idx.tolist())
    assert sorted(train_idx.tolist() + test_idx.tolist()) == list(range(1797))
    for cls in range(10):  # stratified: ~20% of each class held out
        n = int((target == cls).sum())
        assert int((target[test_idx.numpy()] == cls).sum()) == round(0.2 * n)
    again = digits_split_indices(0.2, seed=0)
    other = digits_split_indices(0.2, seed=1)
    assert torch.equal(again[1], test_idx) and not torch.equal(other[1], test_idx)

    # size 8: no resize, so pixels are exactly round(v / 16 * 255) of the chosen samples
    test = load_digits("test", size=8, seed=0)
    images = sklearn_digits().images[test_idx.numpy()]
    expected = np.round(images.astype(np.float32) / 16.0 * 255.0).astype(np.uint8)
    assert torch.equal(test.images[:, 0], torch.from_numpy(expected))
    assert test.labels.tolist() == target[test_idx.numpy()].tolist()


@pytest.mark.parametrize("size", [4, 16, 28])
def test_digits_size_and_channels(size):
    train = load_digits("train", size=size)
    test = load_digits("test", size=size)
    assert len(train) + len(test) == 1797 and len(test) == 359
    assert train.images.shape == (len(train), 3, size, size) and train.images.dtype == torch.uint8
    assert torch.equal(train.images[:, 0], train.images[:, 1]) and torch.equal(train.images[:, 0], train.images[:, 2])
    assert train.classes == tuple("0123456789")
    assert int(train.images.max()) > 200  # scaled to 0..255
    assert torch.equal(load_digits("train", size=size).images, train.images)
    assert train.meta["split"] == "train" and train.meta["seed"] == 0


def test_printed_digits(tmp_path):
    a = render_printed_digits(per_class=20, size=16, seed=0)
    b = render_printed_digits(per_class=20, size=16, seed=0)
    c = render_printed_digits(per_class=20, size=16, seed=1)
    assert a.images.shape == (200, 3, 16, 16) and a.images.dtype == torch.uint8
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    assert torch.bincount(a.labels, minlength=10).tolist() == [20] * 10
    assert a.classes == tuple("0123456789")
    assert torch.equal(a.images[:, 0], a.images[:, 2])
    assert (a.images.flatten(1).max(1).values > 150).all()  # every image shows a bright digit
    assert (a.images[:, :, 0, 0] < 64).all()  # on a black background
    # white on black like sklearn digits: mostly dark
    assert a.images.float().mean() < 100
    small = render_printed_digits(per_class=1, size=8, seed=0)
    assert small.images.shape == (10, 3, 8, 8) and small.meta["seed"] == 0
    save_image_data(small, tmp_path / "printed.npz")
    assert load_image_data(tmp_path / "printed.npz").meta == small.meta


# ---------------------------------------------------------------------------------------------
# registry


def test_registry(tmp_path):
    splits = prepare_dataset("digits", tmp_path, size=8)
    assert set(splits) == {"train", "test"} and len(splits["test"]) == 359
    write_cifar(tmp_path)
    cifar = prepare_dataset("cifar10", tmp_path, verify=False)
    assert len(cifar["train"]) == 30 and len(cifar["test"]) == 6
    write_svhn(tmp_path, "train")
    write_svhn(tmp_path, "test", seed=1)
    assert len(prepare_dataset("svhn", tmp_path, verify=False)["test"]) == 7
    assert len(prepare_ood("printed_digits", tmp_path, per_class=2, size=8)) == 20
    write_cifar10c(tmp_path / "CIFAR-10-C")
    assert len(prepare_ood("cifar10c", tmp_path, corruption="fog", severity=2)) == 4
    with pytest.raises(NoiseKDError, match="cifar10"):
        prepare_dataset("mnist", tmp_path)
    with pytest.raises(NoiseKDError, match="cinic10"):
        prepare_ood("lsun", tmp_path)
