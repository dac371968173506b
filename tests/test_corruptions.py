"""CIFAR-10-C corruptions: API, determinism, hand-computed references, noise levels, severity ordering."""

from __future__ import annotations

import io
from itertools import pairwise

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import zoom as scipy_zoom
from skimage.color import hsv2rgb, rgb2hsv
from skimage.filters import gaussian
from sklearn.datasets import load_sample_images

import noisekd.corruptions as C
from noisekd.corruptions import CORRUPTIONS, corrupt

DETERMINISTIC = {"brightness", "contrast", "saturate", "pixelate", "jpeg_compression", "defocus_blur",
                 "gaussian_blur", "zoom_blur"}  # fmt: skip
RANDOM = [name for name in CORRUPTIONS if name not in DETERMINISTIC]


def natural_images(size: int = 32, n_synth: int = 16, seed: int = 0) -> np.ndarray:
    """Textured crops of sklearn's two sample photos (1/4 scale) plus gradients with random shapes."""
    crops = []
    for img in load_sample_images().images:  # china.jpg, flower.jpg, 427 x 640
        small = np.asarray(Image.fromarray(img).resize((160, 107), Image.Resampling.BOX))
        for i in range(0, small.shape[0] - size + 1, size // 2):
            for j in range(0, small.shape[1] - size + 1, size):
                crop = small[i : i + size, j : j + size]
                if crop.std() > 25:  # skip flat sky
                    crops.append(crop)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    synth = []
    for _ in range(n_synth):
        a, b, c = rng.uniform(0, 255, (3, 3))
        img = a + (b - a) * xx[..., None] * rng.uniform(0, 1) + (c - a) * yy[..., None] * rng.uniform(0, 1)
        for _ in range(3):
            colour = rng.uniform(0, 255, 3)
            cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.3)
            if rng.random() < 0.5:
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            else:
                mask = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < 0.6 * r)
            img[mask] = colour
        img += rng.normal(0, 6, img.shape)
        synth.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.concatenate([np.stack(crops), np.stack(synth)])


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return natural_images()


def small_batch(h: int, w: int, n: int = 3) -> np.ndarray:
    return np.random.default_rng(h * 100 + w).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------- API


def test_names_are_the_cifar10c_release_files():
    assert CORRUPTIONS == (
        "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
        "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
        "speckle_noise", "gaussian_blur", "spatter", "saturate",
    )  # fmt: skip
    assert all(len(C.PARAMS[name]) == 5 for name in CORRUPTIONS)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_shape_dtype_seed(name):
    state = np.random.get_state()
    for h, w in ((32, 32), (16, 16), (24, 40)):
        x = small_batch(h, w)
        before = x.copy()
        a = corrupt(x, name, 3, seed=7)
        assert a.shape == x.shape and a.dtype == np.uint8
        assert np.array_equal(x, before), "input modified"
        assert np.array_equal(a, corrupt(x, name, 3, seed=7)), "not deterministic for a seed"
        b = corrupt(x, name, 3, seed=8)
        if name in DETERMINISTIC:
            assert np.array_equal(a, b)
        else:
            assert not np.array_equal(a, b), "seed ignored"
    after = np.random.get_state()
    assert np.array_equal(state[1], after[1]) and state[2:] == after[2:], "numpy's global RNG was used"


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_odd_sizes(name):
    # tiny images, and 64x64 where pixel parameters double (glass blur then swaps within 2 px)
    for h, w in ((2, 2), (3, 5), (64, 64)):
        x = small_batch(h, w, n=2)
        out = corrupt(x, name, 5, 0)
        assert out.shape == x.shape and out.dtype == np.uint8


def test_empty_batch_and_chunking(monkeypatch):
    empty = np.zeros((0, 32, 32, 3), dtype=np.uint8)
    assert corrupt(empty, "gaussian_noise", 1, 0).shape == empty.shape
    x = small_batch(16, 16, n=7)
    whole = corrupt(x, "contrast", 4, 0)
    monkeypatch.setattr(C, "_CHUNK_PIXELS", 2 * 16 * 16)  # chunks of 2 images
    assert np.array_equal(corrupt(x, "contrast", 4, 0), whole)
    chunked = corrupt(x, "shot_noise", 2, 3)
    assert np.array_equal(chunked, corrupt(x, "shot_noise", 2, 3))


@pytest.mark.parametrize(
    "name, severity, images_",
    [
        ("gaussian_nosie", 1, None),
        ("Gaussian Noise", 1, None),
        ("contrast", 0, None),
        ("contrast", 6, None),
        ("contrast", 2.0, None),
        ("contrast", True, None),
        ("contrast", 1, np.zeros((2, 32, 32, 3), dtype=np.float32)),
        ("contrast", 1, np.zeros((32, 32, 3), dtype=np.uint8)),
        ("contrast", 1, np.zeros((2, 32, 32, 4), dtype=np.uint8)),
    ],
)
def test_bad_arguments(name, severity, images_):
    x = small_batch(32, 32) if images_ is None else images_
    with pytest.raises(ValueError) as err:
        corrupt(x, name, severity, 0)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------- hand-computed references
# Parameters written out from make_cifar_c.py; every reference ends with np.uint8(...) (truncation), like the script.


def per_image(fn, x):
    return np.stack([np.uint8(fn(img)) for img in x])


@pytest.mark.parametrize("severity, c", list(enumerate([0.75, 0.5, 0.4, 0.3, 0.15], start=1)))
def test_contrast_by_hand(images, severity, c):
    def ref(img):
        f = img / 255.0
        means = np.mean(f, axis=(0, 1), keepdims=True)
        return np.clip((f - means) * c + means, 0, 1) * 255

    assert np.array_equal(corrupt(images, "contrast", severity, 0), per_image(ref, images))


@pytest.mark.parametrize("severity, c", list(enumerate([0.05, 0.1, 0.15, 0.2, 0.3], start=1)))
def test_brightness_by_hand(images, severity, c):
    def ref(img):
        hsv = rgb2hsv(img / 255.0)
        hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
        return np.clip(hsv2rgb(hsv), 0, 1) * 255

    assert np.array_equal(corrupt(images, "brightness", severity, 0), per_image(ref, images))


SATURATE = [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)]


@pytest.mark.parametrize("severity, c", list(enumerate(SATURATE, start=1)))
def test_saturate_by_hand(images, severity, c):
    def ref(img):
        hsv = rgb2hsv(img / 255.0)
        hsv[..., 1] = np.clip(hsv[..., 1] * c[0] + c[1], 0, 1)
        return np.clip(hsv2rgb(hsv), 0, 1) * 255

    assert np.array_equal(corrupt(images, "saturate", severity, 0), per_image(ref, images))


@pytest.mark.parametrize("severity, c", list(enumerate([0.95, 0.9, 0.85, 0.75, 0.65], start=1)))
@pytest.mark.parametrize("size", [(32, 32), (16, 16), (24, 40)])
def test_pixelate_by_hand(images, severity, c, size):
    # make_cifar_c.py: BOX down to int(32 * c), then BOX (not NEAREST) back up to 32
    h, w = size
    x = images if size == (32, 32) else small_batch(h, w, n=4)

    def ref(img):
        small = Image.fromarray(img).resize((int(w * c), int(h * c)), Image.Resampling.BOX)
        return np.asarray(small.resize((w, h), Image.Resampling.BOX))

    assert np.array_equal(corrupt(x, "pixelate", severity, 0), per_image(ref, x))


@pytest.mark.parametrize("severity, quality", list(enumerate([80, 65, 58, 50, 40], start=1)))
def test_jpeg_by_hand(images, severity, quality):
    def ref(img):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=quality)
        return np.asarray(Image.open(buf))

    out = corrupt(images, "jpeg_compression", severity, 0)
    assert np.array_equal(out, per_image(ref, images))
    assert not np.array_equal(out, images)


@pytest.mark.parametrize("severity, sigma", list(enumerate([0.4, 0.6, 0.7, 0.8, 1.0], start=1)))
def test_gaussian_blur_by_hand(images, severity, sigma):
    def ref(img):
        return np.clip(gaussian(img / 255.0, sigma=sigma, channel_axis=-1), 0, 1) * 255

    assert np.array_equal(corrupt(images, "gaussian_blur", severity, 0), per_image(ref, images))


@pytest.mark.parametrize("severity, stop", list(enumerate([1.06, 1.11, 1.16, 1.21, 1.26], start=1)))
def test_zoom_blur_by_hand(images, severity, stop):
    def clipped_zoom(img, z):
        h = img.shape[0]
        ch = int(np.ceil(h / z))
        top = (h - ch) // 2
        out = scipy_zoom(img[top : top + ch, top : top + ch], (z, z, 1), order=1)
        trim = (out.shape[0] - h) // 2
        return out[trim : trim + h, trim : trim + h]

    def ref(img):
        f = (img / 255.0).astype(np.float32)
        zooms = np.arange(1, stop, 0.01)
        acc = np.zeros_like(f)
        for z in zooms:
            acc += clipped_zoom(f, z)
        return np.clip((f + acc) / (len(zooms) + 1), 0, 1) * 255

    x = images[:12]
    assert np.array_equal(corrupt(x, "zoom_blur", severity, 0), per_image(ref, x))


# ------------------------------------------------------------------------------------------- building blocks


def glass_reference_loop(x, off, d):
    """make_cifar_c.py's pixel loop, one image and one pixel at a time, with given offsets (dy, dx).  Its
    tuple assignment of numpy views is kept as written: it copies (h', w') into (h, w) and leaves (h', w')."""
    x = x.copy()
    for n in range(x.shape[0]):
        for h in range(x.shape[1] - d, d, -1):
            for w in range(x.shape[2] - d, d, -1):
                dy, dx = off[n, h, w]
                hp, wp = h + dy, w + dx
                x[n, h, w], x[n, hp, wp] = x[n, hp, wp], x[n, h, w]
    return x


@pytest.mark.parametrize("d, h, w", [(1, 12, 10), (1, 32, 32), (2, 12, 13), (3, 16, 11)])
def test_glass_shuffle_matches_reference_loop(d, h, w):
    rng = np.random.default_rng(d * 1000 + h)
    x = rng.integers(0, 256, (6, h, w, 3), dtype=np.uint8)
    off = rng.integers(-d, d, size=(6, h, w, 2))  # randint(-d, d): [-d, d - 1]
    expected = glass_reference_loop(x, off, d)
    assert np.array_equal(C._glass_shuffle_loop(x, off, d), expected)
    if d == 1:
        assert np.array_equal(C._glass_shuffle_d1(x, off), expected)


def test_glass_shuffle_copies_by_hand():
    # 4x4, d = 1: the scan visits rows and columns 3..2.  (3,3) takes its left neighbour, (3,2) the pixel
    # above, (2,3) its up-left neighbour, (2,2) stays; every source keeps its value (no swap).
    x = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1)
    off = np.zeros((1, 4, 4, 2), dtype=np.int64)
    off[0, 3, 3] = (0, -1)
    off[0, 3, 2] = (-1, 0)
    off[0, 2, 3] = (-1, -1)
    expected = x.copy()
    expected[0, 3, 3], expected[0, 3, 2], expected[0, 2, 3] = x[0, 3, 2], x[0, 2, 2], x[0, 1, 2]
    assert np.array_equal(C._glass_shuffle_d1(x, off), expected)
    assert np.array_equal(C._glass_shuffle_loop(x, off, 1), expected)
    assert np.array_equal(glass_reference_loop(x, off, 1), expected)


@pytest.mark.parametrize("radius, sigma", [(6, 1), (9, 2.5)])
def test_motion_blur_kernel_is_one_sided_gaussian_line(radius, sigma):
    # angle 0: out(x) = sum_i k_i in(x + i), so a bright dot is smeared to its left with weights k_i
    x = np.zeros((1, 9, 40, 1))
    x[0, 4, 30] = 1.0
    out = C._motion_blur(x, radius, sigma, np.array([0.0]))[0, :, :, 0]
    i = np.arange(2 * radius + 1)
    k = np.exp(-(i**2) / (2 * sigma**2))
    expected = np.zeros((9, 40))
    expected[4, 30 - i] = k / k.sum()
    np.testing.assert_allclose(out, expected, atol=1e-12)
    # 90 degrees: the smear goes up (y grows downwards)
    out = C._motion_blur(x, radius, sigma, np.array([90.0]))[0, :, 30, 0]
    assert out[4] > 0 and out[3] > 0 and out[5] == 0


def test_plasma_fractal_normalised():
    maps = C._plasma_fractal(4, 32, 2.0, np.random.default_rng(0))
    assert maps.shape == (4, 32, 32)
    np.testing.assert_allclose(maps.min(axis=(1, 2)), 0)
    np.testing.assert_allclose(maps.max(axis=(1, 2)), 1)
    assert not np.allclose(maps[0], maps[1])


def _script_frost(x: np.ndarray, severity: int, photo: int, x_start: int, y_start: int) -> np.ndarray:
    """make_cifar_c.py's frost for one 32x32 image, its random draws given: the photograph read with
    OpenCV (BGR), scaled by 1/5, a 32x32 crop flipped to RGB, blended and truncated to uint8."""
    import cv2

    c = [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)][severity - 1]
    frost = cv2.imread(str(C.frost_photo_dir() / ["frost1.png", "frost2.png", "frost3.png", "frost4.jpg",
                                                   "frost5.jpg", "frost6.jpg"][photo]))
    frost = cv2.resize(frost, (0, 0), fx=0.2, fy=0.2)
    frost = frost[x_start:x_start + 32, y_start:y_start + 32][..., [2, 1, 0]]
    return np.uint8(np.clip(c[0] * np.array(x) + c[1] * frost, 0, 255))


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_frost_is_the_scripts_photograph_blend(images, severity):
    """Every frosted image equals the script's frost on the photograph and crop corner that the seeded
    generator drew for it (replayed here in the port's order: the photographs, then per photograph its
    images' crop corners)."""
    x = images[:40]
    out = C.corrupt(x, "frost", severity, seed=7)
    rng = np.random.default_rng(7)
    which = rng.integers(5, size=len(x))
    photos = C._frost_photos(0.2)
    corners = {}
    for k, photo in enumerate(photos):
        sel = np.flatnonzero(which == k)
        ys = rng.integers(0, photo.shape[0] - 32, size=sel.size)
        xs = rng.integers(0, photo.shape[1] - 32, size=sel.size)
        corners.update({int(i): (int(a), int(b)) for i, a, b in zip(sel, ys, xs)})
    assert len(set(which.tolist())) > 2  # several photographs in use
    for i in range(len(x)):
        np.testing.assert_array_equal(out[i], _script_frost(x[i], severity, int(which[i]), *corners[i]))


def test_frost_without_its_photographs_says_what_to_install(monkeypatch):
    monkeypatch.setattr(C.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(C.NoiseKDError, match="pip install imagecorruptions==1.1.2"):
        C.frost_photo_dir()


def test_frost_photographs_are_found_and_scale_with_the_image():
    assert [p.name for p in sorted(C.frost_photo_dir().iterdir()) if p.stem.startswith("frost")][:5] == list(C.FROST_PHOTOS)
    full, small = C._frost_photos(0.2), C._frost_photos(round(0.2 * C._scale(12, 12), 6))
    assert all(0.3 < s.shape[0] / f.shape[0] < 0.45 for f, s in zip(full, small))  # 12/32 of the 32x32 scale
    out = C.corrupt(small_batch(12, 12, 5), "frost", 3, seed=0)
    assert out.shape == (5, 12, 12, 3) and out.dtype == np.uint8


# ------------------------------------------------------------------------------------------- noise levels


def test_noise_levels_follow_parameters():
    grey = np.full((64, 32, 32, 3), 128, dtype=np.uint8)
    x = 128 / 255
    for severity, c in enumerate([0.04, 0.06, 0.08, 0.09, 0.10], start=1):
        out = corrupt(grey, "gaussian_noise", severity, 0) / 255.0
        assert abs(out.std() - c) < 0.05 * c
    for severity, c in enumerate([0.06, 0.1, 0.12, 0.16, 0.2], start=1):
        out = corrupt(grey, "speckle_noise", severity, 0) / 255.0
        assert abs(out.std() - x * c) < 0.05 * x * c
    for severity, c in enumerate([500, 250, 100, 75, 50], start=1):
        out = corrupt(grey, "shot_noise", severity, 0) / 255.0
        assert abs(out.std() - np.sqrt(x / c)) < 0.05 * np.sqrt(x / c)
    for severity, amount in enumerate([0.01, 0.02, 0.03, 0.05, 0.07], start=1):
        out = corrupt(grey, "impulse_noise", severity, 0)
        salt, pepper = (out == 255).mean(), (out == 0).mean()
        assert abs(salt - amount / 2) < 0.1 * amount and abs(pepper - amount / 2) < 0.1 * amount
        assert set(np.unique(out)) <= {0, int(np.uint8(128 / 255 * 255)), 255}  # float64 round trip, truncated


# ------------------------------------------------------------------------------------------- severity ordering


def mad(a, b):
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def decorrelation(a, b):
    """1 - mean per-image Pearson correlation between clean and corrupted pixels."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    a -= a.mean(1, keepdims=True)
    b -= b.mean(1, keepdims=True)
    return float(1 - ((a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1) + 1e-12)).mean())


def distortion(images, name, metric=mad, seeds=(0, 1)):
    return [np.mean([metric(images, corrupt(images, name, s, seed)) for seed in seeds]) for s in range(1, 6)]


def non_decreasing(values, rel_tol=0.01):
    return all(b >= a * (1 - rel_tol) for a, b in pairwise(values))


# Corruptions whose CIFAR-10-C parameters are monotone in mean absolute difference.  motion_blur's severities
# 3 (radius 6, sigma 2) and 4 (radius 8, sigma 2) are practically the same kernel (taps beyond 6 weigh < 1e-9
# at sigma 2), hence the 1 % tolerance.
MAD_MONOTONE = [
    "gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "defocus_blur", "motion_blur", "zoom_blur",
    "gaussian_blur", "snow", "fog", "brightness", "contrast", "pixelate", "jpeg_compression",
]  # fmt: skip


@pytest.mark.parametrize("name", MAD_MONOTONE)
def test_distortion_grows_with_severity(images, name):
    values = distortion(images, name)
    assert values[0] > 0.5
    assert non_decreasing(values), values


def test_frost_decorrelation_grows(images):
    # frost = c0 * x + c1 * frost with c0 falling (1, 1, .9, .85, .75) as c1 rises (.2, .3, .4, .4, .45): the
    # darkening offsets part of the added frost, so MAD is not monotone (severity 4 < 3 on natural images), but
    # the frost-to-image ratio c1 / c0 rises strictly, and so does the decorrelation from the clean image.
    assert non_decreasing(distortion(images, "frost", decorrelation), rel_tol=0)
    values = distortion(images, "frost")
    assert values[1] > values[0]  # same c0 = 1, more frost


def test_glass_blur_ordering(images):
    # (sigma, iterations) = (.05, 1), (.25, 1), (.4, 1), (.25, 2), (.4, 2).  Not monotone in MAD: at one iteration
    # a larger sigma smooths the shuffled pixels back towards the image, so 1 > 2 > 3 in MAD; what the release
    # orders is the number of shuffle passes: a second pass distorts more than one at the same sigma, and
    # both two-pass severities more than every one-pass one.
    v = distortion(images, "glass_blur")
    assert v[3] > v[1] and v[4] > v[2]
    assert min(v[3], v[4]) > max(v[0], v[1], v[2])


def test_spatter_ordering(images):
    # severities 1-3 are water drops, 4-5 mud: two different effects, each monotone
    v = distortion(images, "spatter")
    assert v[0] < v[1] < v[2] and v[3] < v[4]


def test_saturate_ordering(images):
    # saturation factors .3, .1 (desaturation) then 1.5, 2 (+.1), 2.5 (+.2): severity 3 is the mildest, each
    # branch is monotone
    v = distortion(images, "saturate")
    assert v[0] < v[1] and v[2] < v[3] < v[4]
    assert v[2] == min(v)


def test_elastic_nonaffine_displacement_grows():
    # (alpha, sigma, affine jitter) / 32 = (0, 0, .08), (.05, .2, .07), (.08, .06, .06), (.1, .04, .05),
    # (.1, .03, .03): the affine jitter shrinks with severity (so total displacement and MAD fall) while the
    # local elastic displacement grows.  Read the sampled coordinates off a coordinate-ramp image, fit an
    # affine map per image, and check the non-affine residual grows and the total displacement falls.
    n, s = 48, 32
    yy, xx = np.mgrid[0:s, 0:s]
    ramp = np.stack([xx * 8, yy * 8, np.full_like(xx, 128)], -1).astype(np.uint8)
    border = 6
    inner = (slice(border, s - border), slice(border, s - border))
    design = np.stack([xx[inner].ravel(), yy[inner].ravel(), np.ones(xx[inner].size)], 1).astype(float)
    residual, total = [], []
    for severity in range(1, 6):
        out = corrupt(np.repeat(ramp[None], n, 0), "elastic_transform", severity, 0).astype(float)
        res, tot = [], []
        for o in out:
            pts = np.stack([o[..., 0][inner].ravel() / 8, o[..., 1][inner].ravel() / 8], 1)
            coef, *_ = np.linalg.lstsq(design, pts, rcond=None)
            res.append(np.sqrt(((pts - design @ coef) ** 2).sum(1).mean()))
            tot.append(np.sqrt(((pts - design[:, :2]) ** 2).sum(1).mean()))
        residual.append(np.mean(res))
        total.append(np.mean(tot))
    assert residual[0] < 0.1  # severity 1 is affine only (up to 1/8 px quantisation of the ramp)
    assert non_decreasing(residual, rel_tol=0.05), residual
    assert residual[4] > 0.5
    assert all(b < a for a, b in pairwise(total)), total
