"""Whole-paper cost: measured step rates x the DAG's job counts -> GPU-hours.

    python -m benchmarks.cost --device cuda [--config config.yaml ...] [--from-records [RECORDS.jsonl]]

Measures on this device (or, with ``--from-records``, reads the newest ``train_step``, ``pgd`` and
``concurrency`` records for it under results/benchmarks/, or in a JSON-lines file of records such as
benchmarks/records/h100-2026-11-22.jsonl):
- training images/s of the teacher (WRN-40-2; with dropout, `teacher_dropout`, for the Fickle Teacher
  teachers), the student alone (WRN-16-2), the KD step (both), the Fickle Teacher step (`kd_fickle`),
  the KD step with the teacher's logits looked up (`kd_cached`) and the feature methods' step
  (`kd_features`), through `noisekd.train.fit`, as
  `benchmarks.train_step` does, and each one's first-epoch warm-up; the build rate of a teacher's
  logits table (images x crop/flip variants per second);
- inference images/s of the student (clean, OOD and the 19 x 5 corruption sets are forwards);
- (older records only, without `kd_fickle`: from before a dropout network compiled whole) the KD
  step with nothing compiled (`--ablation no_compile`) stands in for the Fickle Teacher step, and
  the plain teacher's for the dropout teachers'; the output's `stand_ins` names every such stand-in;
- PGD (sample x restart x step)/s of the student: the slower of its two measured modes (early stop
  off, and on as the pipeline runs it), every pair running all its steps, so the attack cost is an
  upper bound (on trained models fooled pairs drop out early);
- (records only) the gain of runs side by side in threads, from `benchmarks.concurrency`, per step
  where measured (else the KD step's, named in `stand_ins`).
Then walks the config's plan as the workflow runs it (`noisekd.plan.Plan`): one job per teacher kind
and per student cell training its seeds side by side, one warm-up per job, every student seed's
evaluation and attacks, Table 4's step counts sharing one longest attack, one logits table per
teacher that cells with `plan.uses_teacher_logits` read (those cells at the `kd_cached` rate; records
from before the table existed have no `kd_cached`: then those cells count at the `kd` rate and the
tables at the teacher's training-step rate, upper bounds named in `stand_ins`).
Prints one JSON line with GPU-hours per job family and in total, every stand-in (`stand_ins`) and
what no benchmark measures (`not_counted`).  Data sizes are the real datasets'
(CIFAR-10 50 000 / 10 000, SVHN 73 257 / 26 032, CINIC-10 subset 21 000); the rates are measured on
synthetic 32x32 images of the same shape, which cost the same per image.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.common import DEFAULT_OUT_DIR, context, emit
from benchmarks.train_step import ROLES, inference_rate, synthetic_cifar, time_fit
from noisekd.config import load_config
from noisekd.methods import get_method
from noisekd.objective import FEATURE_TERMS
from noisekd.plan import Plan
from noisekd.settings import Augmentation, augmentation_variants

SIZES = {  # (train, test, ood) images of each real source
    "cifar10": (50_000, 10_000, 21_000),
    "svhn": (73_257, 26_032, 0),
}
CORRUPTION_SETS = 19 * 5


def measure(device: torch.device, n: int, batch_size: int, settings: dict) -> dict:
    from benchmarks import pgd as pgd_bench

    data = synthetic_cifar(n)
    timed = {role: time_fit(data, role, device, batch_size, 2, min(n, 5000), **settings)
             for role in ROLES}
    rates = _rates_of({**timed, "n": n, "inference_images_per_s": inference_rate(data, device)})
    rec = pgd_bench.main(["--device", str(device), "--n", str(min(n, 10_000 if device.type == "cuda" else 16)),
                          "--out-dir", ""])
    rates["pgd_row_steps"] = _pgd_row_steps(rec)
    return rates


def _pgd_row_steps(record: dict) -> float:
    """(sample x restart x step)/s of a `pgd` record, every pair running all its steps: the slower of
    its two modes (with early stop, as the pipeline attacks, each step also checks which pairs are
    fooled, which costs more than it saves while few are), so the attack cost is an upper bound."""
    rate = min(record["images_per_s"], record.get("images_per_s_early_stop") or float("inf"))
    return round(rate * record["restarts"] * record["steps"], 1)


def from_records(device: torch.device, out_dir: Path) -> dict:
    if out_dir.is_file():  # a JSON-lines file of records, e.g. benchmarks/records/*.jsonl
        records = [json.loads(line) for line in out_dir.read_text().splitlines() if line.strip()]
    else:
        records = [json.loads(p.read_text()) for p in out_dir.glob(f"*-{str(device).replace(':', '')}-*.json")]
    records.sort(key=lambda r: r.get("date", ""), reverse=True)

    def newest(name, keys, where=lambda r: True):
        """The newest full-size record of benchmark `name` on this device that has all `keys`."""
        for record in records:
            if (record.get("benchmark") == name and record.get("device") == str(device) and not record.get("quick")
                    and all(record.get(k) for k in keys) and where(record)):
                return record
        return None

    ts = newest("train_step", ("teacher", "student", "kd", "inference_images_per_s"))
    pg = newest("pgd", ("inference_model",))  # the model as the pipeline attacks it
    if ts is None or pg is None:
        raise SystemExit(f"no full train_step and pgd records for {device} under {out_dir}; run them first")
    used = [ts, pg]
    settings = ts.get("settings")
    for role in ROLES:  # a step timed in a call of its own (e.g. `gpu_session.sh features`)
        alone = None if ts.get(role) else newest("train_step", (role,), lambda r: r.get("settings") == settings)
        if alone:
            ts = {**ts, role: {**alone[role], "n": alone["n"]}}
            used.append(alone)
    rates = _rates_of(ts)
    rates["pgd_row_steps"] = _pgd_row_steps(pg)
    # Seeds trained side by side: the largest measured group of runs in threads, compiled as configured,
    # per step kind (kd_cached falls back on kd's gain where it was not measured).
    rates["side_by_side"] = {}
    for role in ROLES:
        conc = newest("concurrency", ("runs",), lambda r: r.get("compile") == ts.get("settings", {}).get("compile")
                      and r.get("role", "kd") == role)
        best = max((r for r in conc["runs"] if r["mode"] == "threads"), key=lambda r: r["k"], default=None) if conc else None
        if best and best["k"] > 1 and role in rates:
            rates["side_by_side"][role] = {"k": best["k"],
                                           "gain": round(best["aggregate_images_per_s"] / rates[role], 3)}
            used.append(conc)
    if "kd" in rates["side_by_side"]:  # steps without their own side-by-side measurement take the KD step's
        for role in ROLES:
            if role in rates and role not in rates["side_by_side"]:
                rates["stand_ins"][f"side_by_side.{role}"] = "kd's gain"
    rates["measured"] = [f"{r['benchmark']} {r['date']} on {r['device_name']}: {r['command']}" for r in used]
    return rates


def _rates_of(ts: dict) -> dict:
    roles = [r for r in ROLES if ts.get(r)]
    rates = {role: ts[role]["images_per_s"] for role in roles}
    rates["inference"] = ts["inference_images_per_s"]
    # A job's first epoch also compiles and captures: its extra time over a steady epoch, per role.
    rates["warmup_s"] = {role: round(max(0.0, ts[role]["first_epoch_s"] - ts[role].get("n", ts["n"])
                                         / ts[role]["images_per_s"]), 1) for role in roles}
    if "kd_cached" in roles:
        rates["teacher_table"] = ts["kd_cached"]["teacher_table"]["images_per_s"]
    # Records from before dropout networks compiled whole (masks drawn ahead of the forward) lack the
    # dropout steps: there the Fickle Teacher cells count at the KD step with nothing compiled (their
    # teacher then ran eager; an upper bound) and the dropout teachers at the plain teacher's rate.
    rates["stand_ins"] = {}
    eager = (ts.get("ablation") or {}).get("no_compile", {}).get("images_per_s")
    if "kd_fickle" not in roles and ts.get("settings", {}).get("compile") and eager:
        rates["kd_fickle"] = eager
        rates["warmup_s"]["kd_fickle"] = rates["warmup_s"]["kd"]
        rates["stand_ins"]["kd_fickle"] = "kd with nothing compiled (ablation no_compile): an upper bound"
    if "teacher_dropout" not in roles:
        rates["stand_ins"]["teacher_dropout"] = "teacher (not measured)"
    # Records from before the logits tables: the cached cells at the live teacher's KD step, and the
    # tables at the teacher's training step (forward and backward; the build is forward only).
    if "kd_cached" not in roles:
        rates["kd_cached"], rates["warmup_s"]["kd_cached"] = rates["kd"], rates["warmup_s"]["kd"]
        rates["teacher_table"] = rates["teacher"]
        rates["stand_ins"]["kd_cached"] = "kd (the live teacher's step): an upper bound"
        rates["stand_ins"]["teacher_table"] = "the teacher's training step per crop/flip variant: an upper bound"
    if "kd_features" not in roles:
        rates["kd_features"], rates["warmup_s"]["kd_features"] = rates["kd"], rates["warmup_s"]["kd"]
        rates["stand_ins"]["kd_features"] = "kd (the feature losses of AT, SP, RKD and feature mimicry not measured)"
    return rates


def estimate(plan: Plan, rates: dict) -> dict:
    """GPU seconds per job family for the whole plan, as the workflow runs it: one job per teacher
    kind and per student cell, training its seeds side by side (throughput x `side_by_side[step].gain`,
    the measured gain of the largest group of runs of that step side by side -- of KD runs where that
    step was not measured so -- applied to jobs with at least that many seeds), plus one warm-up
    (compilation, graph capture) per job; evaluation and attacks per seed."""
    seconds = {"teachers": 0.0, "teacher_logits": 0.0, "students": 0.0, "evaluation": 0.0, "attacks": 0.0}
    jobs = {k: 0 for k in seconds}
    sides = rates.get("side_by_side") or {}
    stand_ins = {}

    def gain(seeds: int, role: str = "kd") -> float:
        side = sides.get(role) or sides.get("kd") or {"k": 1, "gain": 1.0}
        if seeds > side["k"] > 1:
            stand_ins[f"side_by_side.{role}.k{seeds}"] = f"the gain of {side['k']} runs side by side"
        return side["gain"] if seeds >= side["k"] else 1.0

    def evaluated_images(dataset: str) -> int:  # clean test, OOD and every corruption set
        dc = plan.dataset_configs[dataset]
        _, test, ood = SIZES[dc["source"]]
        return test + (ood if dc.get("ood") else 0) + (CORRUPTION_SETS * test if dc.get("corruptions") else 0)

    for dataset, kinds in plan.teacher_kinds.items():
        train, test, _ = SIZES[plan.dataset_configs[dataset]["source"]]
        seeds = plan.teacher_seeds
        for kind in kinds.values():
            role = "teacher_dropout" if kind.dropout > 0 and "teacher_dropout" in rates else "teacher"
            epochs = sum(plan.train_config(s).epochs for s in seeds)
            seconds["teachers"] += epochs * train / (rates[role] * gain(len(seeds), role)) + rates["warmup_s"][role]
            seconds["teachers"] += len(seeds) * test / rates["inference"]  # selection accuracy
            seconds["evaluation"] += evaluated_images(dataset) / rates["inference"]  # the selected teacher
            jobs["teachers"] += 1
            jobs["evaluation"] += 1
    cached_rate = "kd_cached" in rates
    if cached_rate:
        for dataset, _kind in plan.logit_teachers():
            train = SIZES[plan.dataset_configs[dataset]["source"]][0]
            aug = Augmentation(**plan.dataset_configs[dataset]["augmentation"])
            seconds["teacher_logits"] += train * augmentation_variants(aug) / rates["teacher_table"]
            jobs["teacher_logits"] += 1
    for dataset in plan.datasets():
        train, test, _ = SIZES[plan.dataset_configs[dataset]["source"]]
        seeds = plan.student_seeds
        for cell in plan.cells(dataset).values():
            method = get_method(cell.method)
            role = "kd" if cell.teacher_kind else "student"
            if cached_rate and plan.uses_teacher_logits(cell):
                role = "kd_cached"
            elif "kd_fickle" in rates and method.fickle_teacher:
                role = "kd_fickle"
            elif "kd_features" in rates and FEATURE_TERMS & set(method.weights(plan.method_params(cell))):
                role = "kd_features"
            epochs = sum(plan.train_config(s, cell).epochs for s in seeds)
            seconds["students"] += epochs * train / (rates[role] * gain(len(seeds), role)) + rates["warmup_s"][role]
            jobs["students"] += 1
            seconds["evaluation"] += len(seeds) * evaluated_images(dataset) / rates["inference"]
            jobs["evaluation"] += len(seeds)
            longest: dict[tuple, int] = {}  # step counts of one (eps, step size, restarts) share one attack
            for a in cell.attacks:
                key = (a.eps, a.step_size, a.restarts)
                longest[key] = max(longest.get(key, 0), a.steps)
            for (_, _, restarts), steps in longest.items():
                # every (sample, restart) row runs `steps` steps (the measured rate includes the last forward)
                seconds["attacks"] += len(seeds) * test * restarts * steps / rates["pgd_row_steps"]
            jobs["attacks"] += len(seeds) if cell.attacks else 0
    return {"seconds": seconds, "jobs": jobs, "stand_ins": stand_ins}


def not_counted(jobs: dict) -> list[str]:
    """What the estimate leaves out, since no benchmark measures it."""
    return [
        f"each job's start-up ({sum(jobs.values())} jobs: Python and torch import, CUDA context, loading its data)",
        "checkpoint writes (at most one per train.checkpoint_interval_s per seed)",
        "cold compiles: a role's warm-up is its first epoch in a benchmark process that may have compiled "
        "other networks before it (the workflow shares torch.compile's cache between jobs)",
    ]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--config", action="append", default=None, help="config.yaml, then presets (repeatable)")
    parser.add_argument("--from-records", nargs="?", const="", default=None, metavar="RECORDS",
                        help="use the newest benchmark records (under --out-dir, or this .jsonl), measure nothing")
    parser.add_argument("--n", type=int, default=None, help="images per measurement (default cuda 50000, cpu 256)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--budget-hours", type=float, default=48.0, help="the target the total is compared with")
    parser.add_argument("--out-dir", default=str(DEFAULT_OUT_DIR))
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    configs = args.config or ["config.yaml"]
    plan = Plan(load_config(*configs))
    if args.from_records is not None:
        rates = from_records(device, Path(args.from_records or args.out_dir))
    else:
        speed = ("precision", "channels_last", "cuda_graphs", "teacher_stream", "compile")
        settings = {k: v for k, v in plan.config["train"].items() if k in speed}
        rates = measure(device, args.n or (50_000 if device.type == "cuda" else 256), args.batch_size, settings)
    est = estimate(plan, rates)
    rates["stand_ins"] = {**rates.get("stand_ins", {}), **est["stand_ins"]}
    hours = {k: round(v / 3600, 2) for k, v in est["seconds"].items()}
    total = round(sum(est["seconds"].values()) / 3600, 2)
    record = {"benchmark": "cost", **context(device), "configs": configs, "rates": rates, "jobs": est["jobs"],
              "gpu_hours": hours, "total_gpu_hours": total, "budget_hours": args.budget_hours,
              "within_budget": total <= args.budget_hours, "not_counted": not_counted(est["jobs"])}
    return emit(record, args.out_dir or None)


if __name__ == "__main__":
    main()
