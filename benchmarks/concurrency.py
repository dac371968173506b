"""Does running several training jobs on one GPU at once pay?  k identical KD runs side by side.

    python -m benchmarks.concurrency --device cuda [--k 1,2,4] [--n 25000] [--epochs 4]
                                     [--mode processes|threads|processes,threads]
                                     [--role kd|kd_cached|teacher|...] [--compile]

For each k, starts k processes of ``benchmarks.train_step --roles kd`` at the same moment (the same
work, so their timed epochs overlap), or k threads of one process each on its own CUDA stream, and
reports the sum of their KD images/s next to a single run's.  `--role` picks another step of
`benchmarks.train_step.ROLES`: e.g. `kd_cached`, the KD step as the workflow runs Hinton/SR/MC/Noisy
Teacher students (teacher logits looked up, no teacher forward), or `teacher` (WRN-40-2 alone).
``gain`` = aggregate images/s at k over images/s at k = 1: above 1 means packing k runs per GPU
(e.g. the seeds of one cell) would shorten the whole paper.  Without MPS, kernels of different
processes are time-sliced, so only the launch gaps of each process can be filled.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from benchmarks.common import DEFAULT_OUT_DIR, context, emit
from benchmarks.train_step import ROLES


def run_k(k: int, device: str, n: int, epochs: int, extra: list[str], role: str = "kd") -> dict:
    cmd = [sys.executable, "-m", "benchmarks.train_step", "--device", device, "--roles", role, "--no-reference",
           "--n", str(n), "--epochs", str(epochs), "--out-dir", "", *extra]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(k)]
    outs = [p.communicate() for p in procs]
    wall = time.perf_counter() - t0
    rates = []
    for p, (out, err) in zip(procs, outs):
        if p.returncode != 0:
            raise RuntimeError(f"train_step failed (exit {p.returncode}): {err.strip().splitlines()[-1:]}")
        rates.append(json.loads(out.strip().splitlines()[-1])[role]["images_per_s"])
    return {"k": k, "per_run_images_per_s": rates, "aggregate_images_per_s": round(sum(rates), 1),
            "wall_s": round(wall, 2)}


def run_k_threads(k: int, device: str, n: int, epochs: int, settings: dict, role: str = "kd") -> dict:
    """k runs in one process through `noisekd.execution.run_side_by_side`, as the workflow trains the
    seeds of a job: each in its own thread on its own CUDA stream (kernels of different streams of one
    process can run at the same time, unlike those of different processes; on a CPU, one after another)."""
    from benchmarks.train_step import synthetic_cifar, time_fit
    from noisekd.execution import run_side_by_side

    if not device.startswith("cuda"):  # one after another there: the sum of their rates would mean nothing
        raise SystemExit("--mode threads needs a CUDA device (on a CPU, run_side_by_side runs one after another)")
    data = synthetic_cifar(n)
    results: list = [None] * k

    def task(i: int):
        def run() -> None:
            results[i] = time_fit(data, role, torch.device(device), 128, epochs, min(n, 5000),
                                  **settings)["images_per_s"]
        return run

    t0 = time.perf_counter()
    run_side_by_side([task(i) for i in range(k)], torch.device(device))
    wall = time.perf_counter() - t0
    return {"k": k, "mode": "threads", "per_run_images_per_s": results,
            "aggregate_images_per_s": round(sum(results), 1), "wall_s": round(wall, 2)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--k", default="1,2,4", help="comma-separated numbers of concurrent runs")
    parser.add_argument("--n", type=int, default=25_000, help="images per epoch")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run; all but the first are timed")
    parser.add_argument("--mode", default="processes", help="processes, threads, or both (comma-separated)")
    parser.add_argument("--compile", action="store_true", help="every run with train.compile on")
    parser.add_argument("--role", default="kd", choices=tuple(ROLES),
                        help="the step timed (benchmarks.train_step.ROLES; default the KD step)")
    parser.add_argument("--out-dir", default=str(DEFAULT_OUT_DIR))
    args, extra = parser.parse_known_args(argv)
    if args.compile:
        extra = [*extra, "--compile"]
    record = {"benchmark": "concurrency", **context(torch.device(args.device)), "n": args.n, "epochs": args.epochs,
              "compile": args.compile, "role": args.role, "extra_args": extra, "runs": []}
    for mode in args.mode.split(","):
        for k in (int(v) for v in args.k.split(",")):
            if mode == "threads":
                run = run_k_threads(k, args.device, args.n, args.epochs, {"compile": args.compile}, args.role)
            else:
                run = {**run_k(k, args.device, args.n, args.epochs, extra, args.role), "mode": "processes"}
            record["runs"].append(run)
            print(f"# {run}", flush=True)
    for r in record["runs"]:  # against one run alone, measured the same way (None without a k = 1 run)
        single = next((b for b in record["runs"] if b["mode"] == r["mode"] and b["k"] == 1), None)
        r["gain"] = round(r["aggregate_images_per_s"] / single["aggregate_images_per_s"], 3) if single else None
    return emit(record, args.out_dir or None)


if __name__ == "__main__":
    main()
