"""Whole-paper cost: measured step rates x the DAG's job counts -> GPU-hours.

    python -m benchmarks.cost --device cuda [--config config.yaml ...] [--from-records]

Measures on this device (or, with ``--from-records``, reads the newest ``train_step`` and ``pgd``
records for it under results/benchmarks/):
- training images/s of the teacher (WRN-40-2), the student alone (WRN-16-2) and the KD step (both),
  through `noisekd.train.fit`, as `benchmarks.train_step` does;
- inference images/s of the student (clean, OOD and the 19 x 5 corruption sets are forwards);
- PGD (sample x restart x step)/s of the student, every pair running all its steps (early stop off,
  so the attack cost is an upper bound: on trained models fooled pairs drop out early).
Then walks the config's plan (`noisekd.plan.Plan`: every teacher seed, every student cell and seed
with its own schedule, every attack, Table 4's step counts sharing one longest attack) and prints one JSON line with GPU-hours per job family
and in total.  Data sizes are the real datasets' (CIFAR-10 50 000 / 10 000, SVHN 73 257 / 26 032,
CINIC-10 subset 21 000).  Nothing is run for the paper's datasets themselves: the rates are measured
on synthetic 32x32 images of the same shape, which costs the same per image.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.common import DEFAULT_OUT_DIR, context, emit
from noisekd.config import load_config
from noisekd.plan import Plan

SIZES = {  # (train, test, ood) images of each real source
    "cifar10": (50_000, 10_000, 21_000),
    "svhn": (73_257, 26_032, 0),
}
CORRUPTION_SETS = 19 * 5


def measure(device: torch.device, n: int, batch_size: int, settings: dict) -> dict:
    from benchmarks import pgd as pgd_bench
    from benchmarks.train_step import inference_rate, synthetic_cifar, time_fit

    data = synthetic_cifar(n)
    rates = {role: time_fit(data, role, device, batch_size, **settings)["images_per_s"]
             for role in ("teacher", "student", "kd")}
    rates["inference"] = inference_rate(data, device)
    rec = pgd_bench.main(["--device", str(device), "--n", str(min(n, 10_000 if device.type == "cuda" else 16)),
                          "--out-dir", ""])
    rates["pgd_row_steps"] = round(rec["images_per_s"] * rec["restarts"] * rec["steps"], 1)
    return rates


def from_records(device: torch.device, out_dir: Path) -> dict:
    def newest(name, keys):
        """The newest full-size record of benchmark `name` on this device that has all `keys`."""
        for path in sorted(out_dir.glob(f"{name}-{str(device).replace(':', '')}-*.json"), reverse=True):
            record = json.loads(path.read_text())
            if not record.get("quick") and all(record.get(k) for k in keys):
                return record
        raise SystemExit(f"no full {name} record with {', '.join(keys) or 'figures'} for {device} under {out_dir}; "
                         f"run benchmarks.{name} first")

    ts = newest("train_step", ("teacher", "student", "kd", "inference_images_per_s"))
    pg = newest("pgd", ("inference_model",))  # the model as the pipeline attacks it
    rates = {role: ts[role]["images_per_s"] for role in ("teacher", "student", "kd")}
    rates["inference"] = ts["inference_images_per_s"]
    rates["pgd_row_steps"] = round(pg["images_per_s"] * pg["restarts"] * pg["steps"], 1)
    rates["measured"] = [f"{r['benchmark']} {r['date']} on {r['device_name']}: {r['command']}" for r in (ts, pg)]
    return rates


def estimate(plan: Plan, rates: dict) -> dict:
    """Seconds per job family for the whole plan, from the measured rates."""
    seconds = {"teachers": 0.0, "students": 0.0, "evaluation": 0.0, "attacks": 0.0}
    jobs = {k: 0 for k in seconds}

    def evaluated_images(dataset: str) -> int:  # clean test, OOD and every corruption set
        dc = plan.dataset_configs[dataset]
        _, test, ood = SIZES[dc["source"]]
        return test + (ood if dc.get("ood") else 0) + (CORRUPTION_SETS * test if dc.get("corruptions") else 0)

    for dataset, _kind, seed in plan.teacher_runs():
        train, test, _ = SIZES[plan.dataset_configs[dataset]["source"]]
        seconds["teachers"] += plan.train_config(seed).epochs * train / rates["teacher"]
        seconds["teachers"] += test / rates["inference"]  # selection accuracy
        jobs["teachers"] += 1
    for dataset, kinds in plan.teacher_kinds.items():  # the selected teacher of each kind is evaluated
        seconds["evaluation"] += len(kinds) * evaluated_images(dataset) / rates["inference"]
        jobs["evaluation"] += len(kinds)
    for dataset, cell_name, seed in plan.student_runs():
        cell = plan.cell(dataset, cell_name)
        train, test, _ = SIZES[plan.dataset_configs[dataset]["source"]]
        rate = rates["kd"] if cell.teacher_kind else rates["student"]
        seconds["students"] += plan.train_config(seed, cell).epochs * train / rate
        seconds["evaluation"] += evaluated_images(dataset) / rates["inference"]
        jobs["students"] += 1
        jobs["evaluation"] += 1
        longest: dict[tuple, int] = {}  # step counts of one (eps, step size, restarts) share one attack
        for a in cell.attacks:
            key = (a.eps, a.step_size, a.restarts)
            longest[key] = max(longest.get(key, 0), a.steps)
        for (_, _, restarts), steps in longest.items():
            # every (sample, restart) row: `steps` forward+backward passes and one last forward
            seconds["attacks"] += test * restarts * (steps + 1 / 3) / rates["pgd_row_steps"]
        jobs["attacks"] += bool(cell.attacks)
    return {"seconds": seconds, "jobs": jobs}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--config", action="append", default=None, help="config.yaml, then presets (repeatable)")
    parser.add_argument("--from-records", action="store_true", help="use the newest benchmark records, measure nothing")
    parser.add_argument("--n", type=int, default=None, help="images per measurement (default cuda 50000, cpu 256)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--budget-hours", type=float, default=48.0, help="the target the total is compared with")
    parser.add_argument("--out-dir", default=str(DEFAULT_OUT_DIR))
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    configs = args.config or ["config.yaml"]
    plan = Plan(load_config(*configs))
    if args.from_records:
        rates = from_records(device, Path(args.out_dir))
    else:
        speed = ("precision", "channels_last", "cuda_graphs", "teacher_stream", "compile")
        settings = {k: v for k, v in plan.config["train"].items() if k in speed}
        rates = measure(device, args.n or (50_000 if device.type == "cuda" else 256), args.batch_size, settings)
    est = estimate(plan, rates)
    hours = {k: round(v / 3600, 2) for k, v in est["seconds"].items()}
    total = round(sum(est["seconds"].values()) / 3600, 2)
    record = {"benchmark": "cost", **context(device), "configs": configs, "rates": rates, "jobs": est["jobs"],
              "gpu_hours": hours, "total_gpu_hours": total, "budget_hours": args.budget_hours,
              "within_budget": total <= args.budget_hours}
    return emit(record, args.out_dir or None)


if __name__ == "__main__":
    main()
