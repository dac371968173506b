"""Throughput of the paper's PGD evaluation: PGD-20 x 5 restarts on WRN-16-2 with 32x32 inputs.

    python -m benchmarks.pgd --device cpu [--quick]

Prints one JSON line.  The network is randomly initialised (seeded) and the labels are its own
clean predictions, so every sample starts correctly classified.  Two figures:

* ``images_per_s``: early_stop=False, i.e. every (sample, restart) pair runs all 20 steps -- the
  fixed, model-independent cost (5 x 20 forward+backward passes and 5 forwards per image);
* ``images_per_s_early_stop``: the default evaluation (fooled pairs are dropped).  An untrained
  network is fooled quickly, so this figure is optimistic for a robust model; it lies between
  ``images_per_s`` and the cost of a few steps.

With ``--repeats k`` each setting is timed k times and the fastest run is reported (the machines
are shared, so the minimum is the least noisy estimate).  Both time
`noisekd.attacks.robust_accuracy` with the paper's eps = 8/255 and step size 0.003.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import DEFAULT_OUT_DIR, context, emit, sync
from noisekd.attacks import robust_accuracy
from noisekd.config import protocol_attack

PAPER = protocol_attack()  # the protocol's eps, step size and restarts (config.yaml)
from noisekd.checkpoints import inference_model
from noisekd.evaluate import ATTACK_BATCH_SIZE
from noisekd.models import wide_resnet

STEPS = 20


def _timed(model, x, y, device, batch_size, early_stop, seed):
    g = torch.Generator(device=device).manual_seed(seed)
    sync(device)
    t0 = time.perf_counter()
    result = robust_accuracy(
        model, x, y, PAPER.eps, PAPER.step_size, STEPS, PAPER.restarts, g, batch_size, early_stop=early_stop
    )
    sync(device)
    return time.perf_counter() - t0, result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="small N, for a smoke test")
    parser.add_argument("--n", type=int, default=None, help="number of images (default 64, quick 8)")
    parser.add_argument("--batch-size", type=int, default=None, help="(sample, restart) rows per pass")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("--repeats", type=int, default=1, help="time each setting this many times, keep the fastest")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plain-model", action="store_true",
                        help="attack the model as trained, not the pipeline's inference copy (BatchNorm folded, "
                             "channels_last on CUDA)")
    parser.add_argument("--out-dir", default=str(DEFAULT_OUT_DIR), help="where the JSON record goes ('' = nowhere)")
    args = parser.parse_args(argv)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n = args.n if args.n is not None else (8 if args.quick else 64)
    batch_size = args.batch_size if args.batch_size is not None else (ATTACK_BATCH_SIZE if device.type == "cuda" else 160)

    torch.manual_seed(args.seed)
    model = wide_resnet(16, 2).to(device).eval()
    if not args.plain_model:
        model = inference_model(model)
    g = torch.Generator(device=device).manual_seed(args.seed)
    x = torch.rand(n, 3, 32, 32, generator=g, device=device)
    with torch.no_grad():
        y = model(x).argmax(1)

    # Warm-up (allocator, kernels) on a couple of images.
    robust_accuracy(model, x[:2], y[:2], PAPER.eps, PAPER.step_size, 2, 2, None, batch_size)

    full_times, es_times = [], []
    for _ in range(max(1, args.repeats)):
        t, full = _timed(model, x, y, device, batch_size, False, args.seed)
        full_times.append(t)
        t, es = _timed(model, x, y, device, batch_size, True, args.seed)
        es_times.append(t)
    full_s, es_s = min(full_times), min(es_times)
    record = {
        "benchmark": "pgd",
        **context(device),
        "model": "WRN-16-2",
        "input": [3, 32, 32],
        "eps": PAPER.eps,
        "step_size": PAPER.step_size,
        "steps": STEPS,
        "restarts": PAPER.restarts,
        "n": n,
        "batch_size": batch_size,
        "inference_model": not args.plain_model,
        "quick": args.quick,
        "repeats": len(full_times),
        "seconds": round(full_s, 3),
        "images_per_s": round(n / full_s, 3),
        "seconds_early_stop": round(es_s, 3),
        "images_per_s_early_stop": round(n / es_s, 3),
        "robust_accuracy": full["worst_of_restarts"],
        "robust_accuracy_early_stop": es["worst_of_restarts"],
    }
    return emit(record, args.out_dir or None)


if __name__ == "__main__":
    main()
