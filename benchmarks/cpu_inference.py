"""Evaluation and PGD on a CPU, the demo's way against the way it ran before, side by side.

    python -m benchmarks.cpu_inference [--threads 1]

The demo's student (WRN-10-1 on 12x12 digits, 360 test images, 5 restarts), random weights and
seeded uint8 images (speed does not depend on what the network learnt).  Three comparisons, each
timed in this process or in fresh ones on the same data:

- evaluation forward: the inference copy with NCHW weights (before) against channels_last (now);
- one PGD step over 1800 (sample, restart) rows: NCHW weights in one 1800-row pass (before) against
  channels_last in 600-row passes (the demo's `evaluation.pgd.batch_size`);
- a 50-step attack (`robust_accuracy_curve`, no early drop) in a fresh process without and with
  `noisekd.jobs.keep_freed_memory` (glibc's malloc keeping freed blocks): wall, user and system time.

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from noisekd.models import fold_batchnorm, wide_resnet

ROWS, SAMPLES = 1800, 360


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (SAMPLES, 3, 12, 12), generator=g, dtype=torch.uint8).float() / 255
    return x, torch.randint(0, 10, (SAMPLES,), generator=g)


def _model(channels_last: bool):
    torch.manual_seed(0)
    model = fold_batchnorm(wide_resnet(10, 1, num_classes=10).eval())
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _best(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def eval_images_per_s(channels_last: bool, batch: int = 1000) -> float:
    model, (x, _) = _model(channels_last), _data()
    x = x.repeat(10, 1, 1, 1)

    def run():
        with torch.inference_mode():
            for i in range(0, len(x), batch):
                model(x[i:i + batch])

    return len(x) / _best(run)


def pgd_step_ms(channels_last: bool, batch: int) -> float:
    model, (x, y) = _model(channels_last), _data()
    x, y = x.repeat(ROWS // SAMPLES, 1, 1, 1), y.repeat(ROWS // SAMPLES)

    def run():
        for i in range(0, ROWS, batch):
            adv = x[i:i + batch].clone().requires_grad_(True)
            loss = F.cross_entropy(model(adv), y[i:i + batch], reduction="sum")
            torch.autograd.grad(loss, adv)

    return 1000 * _best(run)


ATTACK = """if 1:
    import sys, torch
    from benchmarks.cpu_inference import _data, _model
    from noisekd.attacks import robust_accuracy_curve
    from noisekd.jobs import keep_freed_memory
    torch.set_num_threads(int(sys.argv[2]))
    if sys.argv[1] == "keep":
        keep_freed_memory()
    x, y = _data()
    robust_accuracy_curve(_model(True), x, y, 16 / 255, 0.006, [50], restarts=5,
                          generator=torch.Generator().manual_seed(0), batch_size=600, early_stop=False)
"""


def attack_process(mode: str, threads: int) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", ATTACK, mode, str(threads)], check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": round(wall, 2), "user_s": round(after.ru_utime - before.ru_utime, 2),
            "sys_s": round(after.ru_stime - before.ru_stime, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu_inference", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the demo's jobs use 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    record = {
        "benchmark": "cpu_inference", "torch": torch.__version__, "threads": args.threads,
        "eval_img_per_s": {"nchw": round(eval_images_per_s(False)), "channels_last": round(eval_images_per_s(True))},
        "pgd_step_ms": {"nchw_1800_rows": round(pgd_step_ms(False, ROWS)),
                        "channels_last_1800_rows": round(pgd_step_ms(True, ROWS)),
                        "channels_last_600_rows": round(pgd_step_ms(True, 600))},
        "attack_50_steps": {mode: attack_process(mode, args.threads) for mode in ("default", "keep")},
    }
    print(json.dumps(record))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
