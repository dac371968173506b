"""Where a KD step's GPU time goes: the kernels of eager KD steps, by total time.

    python -m benchmarks.profile_step [--steps 20] [--compile] [--top 25]

Runs the KD step (WRN-40-2 -> WRN-16-2, batch 128) through `noisekd.train.fit` without CUDA graphs
under torch.profiler, after a warm-up, and prints the kernels' total GPU time per step (the busy
time a graph replay cannot go below) beside the wall time per step, then the top kernels.  The gap
between the two is launch overhead, which CUDA graphs remove; the busy time is what fusion,
algorithm choice or concurrency must shrink.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch

from benchmarks.train_step import synthetic_cifar, time_fit


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--cudnn-benchmark", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    device = torch.device("cuda")
    data = synthetic_cifar(128 * args.steps)
    overrides = {"cuda_graphs": False, "compile": args.compile}
    time_fit(data, "kd", device, 128, **overrides)  # warm-up: cuDNN plans, compilation
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        wall = time_fit(data, "kd", device, 128, epochs=2, **overrides)
    kernels: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            k = kernels[e.name[:90]]
            k[0] += e.device_time
            k[1] += 1
    steps = 2 * args.steps
    busy_ms = sum(v[0] for v in kernels.values()) / 1e3 / steps
    launches = sum(v[1] for v in kernels.values()) / steps
    print(f"KD step, eager{' compiled' if args.compile else ''}: GPU busy {busy_ms:.3f} ms/step in {launches:.0f} "
          f"kernels/step; eager wall {1e3 * 128 / wall['images_per_s']:.3f} ms/step")
    for name, (us, count) in sorted(kernels.items(), key=lambda kv: -kv[1][0])[: args.top]:
        print(f"{us / 1e3 / steps:8.3f} ms/step {count / steps:6.1f}x  {name}")


if __name__ == "__main__":
    main()
