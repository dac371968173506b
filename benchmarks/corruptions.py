"""Throughput of the 19 CIFAR-10-C corruptions (`noisekd.corruptions.corrupt`) on 32x32 images.

    python -m benchmarks.corruptions [--n 1000] [--repeats 1] [--names fog,snow]

Prints one JSON line.  Each corruption is timed at each severity 1..5 on the same N random-but-structured
images (smooth colour gradients, a few flat-coloured discs and boxes, mild pixel noise, so blurs, JPEG and edge
detection see natural-looking content).  ``images_per_s`` is per corruption over its five severities;
``projected_total_s`` extrapolates linearly to the full CIFAR-10-C job, 19 corruptions x 5 severities x 10000
images (``corrupt`` works in fixed-size chunks of images, so time is linear in N beyond one chunk: 1024
images at 32x32).  ``cpu_s`` is the process CPU time of the timed calls: on a shared machine the wall-clock
figures include time lost to other processes, CPU time does not (it exceeds wall time when BLAS or
scipy use both cores).  With ``--repeats k`` each (corruption, severity) is timed k times and the fastest
is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from noisekd.corruptions import CORRUPTIONS, corrupt

FULL_IMAGES = 10_000  # CIFAR-10 test set
SEVERITIES = (1, 2, 3, 4, 5)


def structured_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """uint8 (n, size, size, 3): colour gradients with random discs / boxes and mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    corners = rng.uniform(0, 255, (n, 3, 3)).astype(np.float32)
    gx, gy = rng.uniform(0, 1, (2, n, 1, 1, 1)).astype(np.float32)
    img = corners[:, 0, None, None, :] + (corners[:, 1] - corners[:, 0])[:, None, None, :] * xx[None, ..., None] * gx
    img = img + (corners[:, 2] - corners[:, 0])[:, None, None, :] * yy[None, ..., None] * gy
    for _ in range(3):
        colour = rng.uniform(0, 255, (n, 1, 1, 3)).astype(np.float32)
        cy, cx = rng.uniform(0.2, 0.8, (2, n, 1, 1))
        r = rng.uniform(0.1, 0.3, (n, 1, 1))
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        box = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < 0.6 * r)
        mask = np.where(rng.random((n, 1, 1)) < 0.5, disc, box)[..., None]
        img = np.where(mask, colour, img)
    img = img + rng.normal(0, 6, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="images per (corruption, severity), default 1000")
    parser.add_argument("--size", type=int, default=32, help="image side, default 32 (CIFAR)")
    parser.add_argument("--repeats", type=int, default=1, help="time each setting this many times, keep the fastest")
    parser.add_argument("--names", default=None, help="comma-separated subset of corruptions (default: all 19)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    names = CORRUPTIONS if args.names is None else tuple(args.names.split(","))
    unknown = [name for name in names if name not in CORRUPTIONS]
    if unknown:
        parser.error(f"unknown corruption(s): {', '.join(unknown)}")
    images = structured_images(args.n, args.size, args.seed)
    corrupt(images[:8], "contrast", 1, 0)  # warm-up: imports, caches

    seconds: dict[str, list[float]] = {}
    cpu_seconds = 0.0
    for name in names:
        seconds[name] = []
        for severity in SEVERITIES:
            best = float("inf")
            for _ in range(max(1, args.repeats)):
                c0, t0 = time.process_time(), time.perf_counter()
                corrupt(images, name, severity, args.seed)
                elapsed = time.perf_counter() - t0
                cpu = time.process_time() - c0
                if elapsed < best:
                    best, best_cpu = elapsed, cpu
            seconds[name].append(round(best, 4))
            cpu_seconds += best_cpu

    wall = sum(sum(v) for v in seconds.values())
    scale = FULL_IMAGES / args.n
    result = {
        "benchmark": "corruptions",
        "n": args.n,
        "size": args.size,
        "repeats": args.repeats,
        "images_per_s": {name: round(len(SEVERITIES) * args.n / sum(t), 1) for name, t in seconds.items()},
        "seconds_per_severity": seconds,
        "measured_s": round(wall, 2),
        "cpu_s": round(cpu_seconds, 2),
        "projected_total_s": round(wall * scale, 1),
        "projected_total_cpu_s": round(cpu_seconds * scale, 1),
        "projected_job": f"{len(names)} corruptions x {len(SEVERITIES)} severities x {FULL_IMAGES} images",
        "cpus": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
