"""The workflow's steps as plain functions of paths and config values.

Each Snakemake rule calls one of these through a three-line script in `workflow_scripts/`, so every
step can also be run and tested from Python without Snakemake.  Every output is written atomically.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .data import Augmentation, ImageData, corrupt_labels, load_image_data, save_image_data, stratified_split
from .evaluate import (
    ATTACK_BATCH_SIZE,
    accuracy,
    attack_rows,
    corruption_rows,
    finish_rows,
    load_corrupted_stack,
    write_rows,
)
from .io import NoiseKDError, atomic_path, write_json_atomic
from .methods import MethodParams, get_method
from .plan import Plan
from .provenance import provenance
from . import teacher_logits
from .train import (TrainConfig, TrainingInterrupted, build_model, fit, inference_model, load_model, resolve_device,
                    resolve_numerics, run_side_by_side, save_model)

log = logging.getLogger("noisekd")


# ---------------------------------------------------------------------------------------------
# Data


def prepare_dataset(dataset_config: dict, data_dir: str, selection: dict, out: dict[str, str]) -> None:
    """Train/val/test .npz for one dataset.  `val` is a seeded stratified hold-out of the training
    set when teachers are selected by validation accuracy, else empty (and train is complete)."""
    from .sources import prepare_dataset as load

    source = dataset_config["source"]
    options = {}
    if source == "digits":
        options = {k: dataset_config[k] for k in ("size", "test_fraction") if k in dataset_config}
        options["seed"] = dataset_config.get("split_seed", 0)
    else:
        options["download"] = True
    splits = load(source, Path(data_dir) / source, **options)
    train, test = splits["train"], splits["test"]
    if selection.get("by", "test") == "validation":
        keep, held = stratified_split(train.labels, selection["validation_fraction"], selection.get("seed", 0))
        train, val = train.subset(keep), train.subset(held)
    else:
        val = train.subset(torch.zeros(0, dtype=torch.long))
    for name, data in (("train", train), ("val", val), ("test", test)):
        save_image_data(data, out[name])
        log.info(f"{source} {name}: {len(data)} images of shape {tuple(data.images.shape[1:])}")


def prepare_ood(dataset_config: dict, data_dir: str, test_path: str, out_path: str) -> None:
    from .sources import prepare_ood as load

    ood = dict(dataset_config["ood"])
    source = ood.pop("source")
    if source == "printed_digits":
        test = load_image_data(test_path)
        ood.setdefault("size", test.images.shape[-1])
    else:
        ood["download"] = True
    data = load(source, Path(data_dir) / source, **ood)
    save_image_data(data, out_path)
    log.info(f"out-of-distribution set {source}: {len(data)} images")


def fetch_corruptions(dataset_config: dict, data_dir: str, out_path: str) -> None:
    """Download, md5-check and extract the released CIFAR-10-C into <data_dir>/cifar10c (a local job:
    compute nodes often have no internet), then record where it lies."""
    from .sources import download_cifar10c
    from .sources.cifar10c import CIFAR10C_MD5

    if dataset_config["source"] != "cifar10":
        raise NoiseKDError("corruptions.source 'released' exists only for cifar10; use 'generate'")
    folder = download_cifar10c(Path(data_dir) / "cifar10c")
    write_json_atomic(out_path, {"folder": str(folder), "archive_md5": CIFAR10C_MD5})


def prepare_corruptions(dataset_config: dict, data_dir: str, test_path: str, out_path: str) -> None:
    """A (19, 5, N, C, H, W) uint8 stack in the test set's order: the released CIFAR-10-C, or the
    corruptions regenerated with `noisekd.corruptions` (any dataset)."""
    from .corruptions import CORRUPTIONS, corrupt

    spec = dataset_config["corruptions"]
    test = load_image_data(test_path)
    n, c, h, w = test.images.shape
    with atomic_path(out_path) as tmp:
        stack = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(CORRUPTIONS), 5, n, c, h, w))
        if spec["source"] == "released":
            from .sources import load_cifar10c

            if dataset_config["source"] != "cifar10":
                raise NoiseKDError("corruptions.source 'released' exists only for cifar10; use 'generate'")
            for i, name in enumerate(CORRUPTIONS):
                for s in range(1, 6):
                    data = load_cifar10c(Path(data_dir) / "cifar10c", name, s)  # fetched by fetch_corruptions
                    if not torch.equal(data.labels, test.labels):
                        raise NoiseKDError(f"CIFAR-10-C {name} labels are not in CIFAR-10 test order")
                    stack[i, s - 1] = data.images.numpy()
        else:
            nhwc = test.images.permute(0, 2, 3, 1).numpy()
            if c == 1:
                nhwc = np.repeat(nhwc, 3, axis=3)
            for i, name in enumerate(CORRUPTIONS):
                t0 = time.perf_counter()
                for s in range(1, 6):
                    out = corrupt(nhwc, name, s, seed=spec.get("seed", 0) * 100 + i * 5 + s)
                    stack[i, s - 1] = np.ascontiguousarray(out.transpose(0, 3, 1, 2)[:, :c])
                log.info(f"{name}: 5 severities x {n} images in {time.perf_counter() - t0:.1f}s")
        stack.flush()
        del stack


def corrupt_training_labels(train_path: str, rate: float, seed: int, out_path: str) -> None:
    """Static label corruption shared by the teacher and the students of a Messy Collaboration cell."""
    train = load_image_data(train_path)
    labels, indices = corrupt_labels(train.labels, rate, train.num_classes, seed)
    with atomic_path(out_path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, labels=labels.numpy(), corrupted_indices=indices.numpy(), rate=rate, seed=seed)
    changed = int((labels != train.labels).sum())
    log.info(f"label corruption {rate}: {len(indices)} labels re-drawn, {changed} actually changed")


def load_training_labels(train: ImageData, labels_path: str | None) -> ImageData:
    """The training set with the statically corrupted labels of `labels_path`, if given; its meta
    records the rate, seed, file and re-drawn indices, which the run summary keeps."""
    if not labels_path:
        return train
    try:
        with np.load(labels_path) as z:
            labels = torch.from_numpy(z["labels"].astype(np.int64))
            rate, seed, indices = float(z["rate"]), int(z["seed"]), z["corrupted_indices"].tolist()
    except (OSError, ValueError, KeyError) as exc:
        raise NoiseKDError(f"label file {labels_path} is unreadable: {exc}") from None
    if labels.shape != train.labels.shape:
        raise NoiseKDError(f"label file {labels_path} does not match the training set size")
    corruption = {"rate": rate, "seed": seed, "file": str(labels_path), "corrupted_indices": indices}
    return train.with_labels(labels, label_corruption=corruption)


# ---------------------------------------------------------------------------------------------
# Training


def _normalisation(train: ImageData) -> tuple[list[float], list[float]]:
    x = train.images.float().div_(255)
    return x.mean((0, 2, 3)).tolist(), x.std((0, 2, 3)).tolist()


def train_teachers(plan: Plan, dataset: str, kind: str, seeds: list[int], inputs: dict, outs: list[dict],
                   threads: int) -> None:
    """Every seed of one teacher kind, side by side on one GPU (one after another on a CPU)."""
    torch.set_num_threads(threads)
    share_compile_cache(plan)
    device = resolve_device(plan.config.get("device"))
    train = load_training_labels(load_image_data(inputs["train"]), inputs.get("labels")).to(device)
    mean, std = _normalisation(train)
    spec = plan.teacher_spec(dataset, kind, train.num_classes, mean, std)
    aug = Augmentation(**plan.dataset_configs[dataset]["augmentation"])
    held_out = {split: load_image_data(inputs[split]).to(device) for split in ("val", "test")}

    def run(seed: int, out: dict) -> None:
        result = _fit(build_model(spec, seed), train, plan.train_config(seed), get_method("baseline"),
                      MethodParams(), None, aug, out, device, seed, len(seeds),
                      run_info={"role": "teacher", "dataset": dataset, "kind": kind, "seed": seed,
                                "label_corruption": train.meta.get("label_corruption")})
        selection = {f"{split}_acc": accuracy(result.model, data) for split, data in held_out.items() if len(data)}
        _finish_run(result, out, extra=selection)

    _train_side_by_side(run, seeds, outs, device)


def train_students(plan: Plan, dataset: str, cell_name: str, seeds: list[int], inputs: dict, outs: list[dict],
                   threads: int) -> None:
    """Every seed of one student cell, side by side on one GPU (one after another on a CPU)."""
    torch.set_num_threads(threads)
    share_compile_cache(plan)
    cell = plan.cell(dataset, cell_name)
    method = get_method(cell.method)
    params = plan.method_params(cell)
    device = resolve_device(plan.config.get("device"))
    train = load_training_labels(load_image_data(inputs["train"]), inputs.get("labels")).to(device)
    mean, std = _normalisation(train)
    aug = Augmentation(**plan.dataset_configs[dataset]["augmentation"])
    teacher, teacher_seed, cached = None, None, None
    if inputs.get("teacher_logits"):
        teacher_seed = selected_seed(inputs["best"])
        precision, _ = resolve_numerics(plan.train_config(seeds[0], cell), device)
        cached, ident = teacher_logits.load(inputs["teacher_logits"], train, aug, precision, train.num_classes)
        cached = cached.to(device)  # once: the seeds trained side by side share it
        if ident.get("teacher_seed") != teacher_seed:
            raise NoiseKDError(f"teacher logits {inputs['teacher_logits']} are of teacher seed "
                               f"{ident.get('teacher_seed')}, {inputs['best']} selects seed {teacher_seed}")
        log.info(f"teacher logits of seed {teacher_seed} from {inputs['teacher_logits']} "
                 f"({tuple(cached.shape)}, {cached.dtype})")
    elif method.teacher:
        path, teacher_seed = best_teacher(inputs["best"], inputs["teachers"])
        teacher = load_model(path, device=device)
        if teacher.spec.dropout != params.dropout and method.fickle_teacher:
            raise NoiseKDError(f"teacher {path} has dropout {teacher.spec.dropout}, cell {cell_name} wants {params.dropout}")
    spec = plan.student_spec(train.num_classes, mean, std)

    def run(seed: int, out: dict) -> None:
        # fit trains an inference copy of the teacher, so the runs can share the loaded one
        result = _fit(build_model(spec, seed), train, plan.train_config(seed, cell), method, params, teacher, aug,
                      out, device, seed, len(seeds),
                      run_info={"role": "student", "dataset": dataset, "cell": cell_name, "seed": seed,
                                "teacher_seed": teacher_seed, "label_corruption": train.meta.get("label_corruption")},
                      teacher_logits=cached)
        _finish_run(result, out, extra={"teacher_seed": teacher_seed})

    _train_side_by_side(run, seeds, outs, device)


def share_compile_cache(plan: Plan) -> None:
    """With train.compile, torch.compile's caches go to `<results_dir>/.cache/torchinductor` (unless
    TORCHINDUCTOR_CACHE_DIR says otherwise), so every later job of the same networks and shapes, on any
    node that shares the folder, reuses the kernels that the first one compiled."""
    if plan.config["train"].get("compile"):
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(plan.results).resolve() / ".cache" / "torchinductor"))


def _train_side_by_side(run, seeds: list[int], outs: list[dict], device) -> None:
    """Run `run(seed, out)` for every seed with `run_side_by_side`; each run's checkpoint is kept
    until all of them have finished, so a job that is retried resumes every seed where it stopped
    (Snakemake removes all outputs of a failed job, finished seeds' included)."""
    if len(seeds) != len(outs):
        raise NoiseKDError(f"{len(seeds)} seeds but {len(outs)} output sets")
    log.info(f"training seeds {seeds} {'side by side' if device.type == 'cuda' else 'one after another'} "
             f"on {device}")
    run_side_by_side([functools.partial(run, seed, out) for seed, out in zip(seeds, outs)], device)
    for out in outs:
        _checkpoint(out).unlink(missing_ok=True)  # every final model supersedes its checkpoint


def _checkpoint(out: dict) -> Path:
    return Path(out["model"]).with_name("checkpoint.pt")


def _fit(model, train, config: TrainConfig, method, params, teacher, aug, out, device, seed, runs, run_info,
         teacher_logits=None):
    checkpoint = _checkpoint(out)
    say = log.info if runs == 1 else (lambda line: log.info(f"[seed {seed}] {line}"))
    try:
        return fit(model, train, config, method, params, teacher=teacher, augmentation=aug,
                   checkpoint_path=checkpoint, device=device, log=say, run_info=run_info,
                   teacher_logits=teacher_logits, draws=run_info["role"])
    except TrainingInterrupted as exc:
        raise NoiseKDError(f"{exc}; checkpoint {checkpoint} kept, a rerun resumes from it") from None


def _finish_run(result, out: dict, extra: dict) -> None:
    summary = {**result.summary, **extra}
    write_json_atomic(out["summary"], summary)
    save_model(out["model"], result.model, summary=json.dumps(summary, default=str))
    log.info("final summary: " + json.dumps({k: v for k, v in summary.items() if k != "history"}, default=str))


def selected_seed(best_path: str) -> int:
    """The teacher seed that `best_path` (select_teacher's output) selects."""
    return json.loads(Path(best_path).read_text())["seed"]


def best_teacher(best_path: str, models: list[str]) -> tuple[str, int]:
    """(model file, seed) of the teacher that `best_path` (select_teacher's output) selects."""
    seed = selected_seed(best_path)
    for path in models:
        if Path(path).parent.name == f"seed{seed}":
            return path, seed
    raise NoiseKDError(f"{best_path} selects teacher seed {seed}, which is not among {models}")


def compute_teacher_logits(plan: Plan, dataset: str, kind: str, inputs: dict, out_path: str, threads: int) -> None:
    """The selected teacher's logits of every training image under every augmentation variant."""
    torch.set_num_threads(threads)
    device = resolve_device(plan.config.get("device"))
    path, seed = best_teacher(inputs["best"], inputs["models"])
    teacher = load_model(path, device=device)
    train = load_image_data(inputs["train"]).to(device)
    aug = Augmentation(**plan.dataset_configs[dataset]["augmentation"])
    precision, channels_last = resolve_numerics(plan.train_config(0), device)
    logits = teacher_logits.compute(teacher, train, aug, precision, channels_last,
                                    plan.config["evaluation"]["batch_size"], log=log.info)
    ident = {**teacher_logits.identity(path, train, aug, precision), "teacher_seed": seed, "kind": kind}
    teacher_logits.save(out_path, logits, ident, provenance=provenance(plan.config, device))
    log.info(f"wrote {out_path}: {tuple(logits.shape)} {logits.dtype}")


def select_teacher(summaries: list[str], by: str, out_path: str) -> None:
    """Pick the teacher seed with the best selection accuracy (test, as the paper, or validation)."""
    key = f"{'val' if by == 'validation' else 'test'}_acc"
    candidates = []
    for path in summaries:
        s = json.loads(Path(path).read_text())
        if key not in s:
            raise NoiseKDError(f"teacher summary {path} has no {key}")
        candidates.append({"seed": s["run"]["seed"], key: s[key], "test_acc": s.get("test_acc")})
    best = max(candidates, key=lambda c: (c[key], -c["seed"]))  # ties: lowest seed
    write_json_atomic(out_path, {"seed": best["seed"], "selected_by": key, "accuracy": best[key],
                                 "candidates": candidates})
    log.info(f"selected teacher seed {best['seed']} ({key} {best[key]:.4f}) from {len(candidates)} seeds")


# ---------------------------------------------------------------------------------------------
# Evaluation


def _eval_data(inputs: dict, device):
    test = load_image_data(inputs["test"]).to(device)
    ood = load_image_data(inputs["ood"]).to(device) if inputs.get("ood") else None
    return test, ood


def _clean_and_ood_rows(model, test, ood, batch_size) -> list[dict]:
    rows = [{"metric": "test_acc", "value": accuracy(model, test, batch_size)}]
    if ood is not None:
        rows.append({"metric": "ood_acc", "value": accuracy(model, ood, batch_size)})
    return rows


def evaluate_model(plan: Plan, identity: dict, model_path: str, inputs: dict, out_path: str, threads: int,
                   extra_rows: list[dict] = ()) -> None:
    """Clean, OOD and corruption metrics of one model as tidy parquet rows."""
    from .corruptions import CORRUPTIONS

    torch.set_num_threads(threads)
    device = resolve_device(plan.config.get("device"))
    model = inference_model(load_model(model_path, device=device))
    batch_size = plan.config["evaluation"]["batch_size"]
    test, ood = _eval_data(inputs, device)
    t0 = time.perf_counter()
    rows = _clean_and_ood_rows(model, test, ood, batch_size)
    if inputs.get("corruptions"):
        rows += corruption_rows(model, test, load_corrupted_stack(inputs["corruptions"], test, CORRUPTIONS), batch_size)
    rows += list(extra_rows)
    for r in rows:
        if r["metric"] in ("test_acc", "ood_acc", "mca", "mca_cond"):
            log.info(f"{r['metric']}: {100 * r['value']:.2f}%")
    log.info(f"evaluated {model_path} in {time.perf_counter() - t0:.1f}s ({len(rows)} rows)")
    write_rows(finish_rows(rows, identity, provenance(plan.config, device)), out_path, config=plan.config)


def student_identity(plan: Plan, dataset: str, cell_name: str, seed: int, summary_path: str) -> dict:
    cell = plan.cell(dataset, cell_name)
    summary = json.loads(Path(summary_path).read_text())
    return {
        "run_id": f"{dataset}/{cell_name}/seed{seed}", "role": "student", "dataset": dataset,
        "method": cell.method, "cell": cell_name, "params": json.dumps(cell.params, sort_keys=True),
        "label_corruption": cell.label_corruption, "seed": seed, "teacher_seed": summary.get("teacher_seed"),
    }


def teacher_identity(plan: Plan, dataset: str, kind: str, best_path: str) -> tuple[dict, list[dict]]:
    best = json.loads(Path(best_path).read_text())
    k = plan.teacher_kinds[dataset][kind]
    identity = {
        "run_id": f"{dataset}/teacher-{kind}/seed{best['seed']}", "role": "teacher", "dataset": dataset,
        "method": "teacher", "cell": kind, "params": json.dumps({"dropout": k.dropout}),
        "label_corruption": k.label_corruption, "seed": best["seed"], "teacher_seed": best["seed"],
    }
    candidates = [
        {"role": "teacher_candidate", "seed": c["seed"], "run_id": f"{dataset}/teacher-{kind}/seed{c['seed']}",
         "metric": "selection_acc", "value": c[best["selected_by"]]}
        for c in best["candidates"]
    ]
    return identity, candidates


def attack_model(plan: Plan, dataset: str, cell_name: str, seed: int, model_path: str, summary_path: str,
                 test_path: str, out_path: str, threads: int) -> None:
    torch.set_num_threads(threads)
    device = resolve_device(plan.config.get("device"))
    model = inference_model(load_model(model_path, device=device))
    test = load_image_data(test_path)
    cell = plan.cell(dataset, cell_name)
    batch_size = plan.config["evaluation"]["pgd"].get("batch_size", ATTACK_BATCH_SIZE)
    rows = attack_rows(model, test, cell.attacks, seed=seed, batch_size=batch_size, log=log.info)
    identity = student_identity(plan, dataset, cell_name, seed, summary_path)
    write_rows(finish_rows(rows, identity, provenance(plan.config, device)), out_path, config=plan.config)


# ---------------------------------------------------------------------------------------------
# Aggregation


def aggregate(paths: list[str], out_path: str, manifest_path: str, config: dict) -> None:
    """All result rows in one parquet, plus a manifest tracing every file to its provenance."""
    import hashlib

    import pandas as pd

    from .provenance import git_commit, package_versions, settings_hash

    frames = [pd.read_parquet(p) for p in paths]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    with atomic_path(out_path) as tmp:
        frame.to_parquet(tmp, index=False)
    files = [{"path": p, "sha256": hashlib.sha256(Path(p).read_bytes()).hexdigest(), "rows": len(f),
              "git_commit": sorted(set(f["git_commit"].dropna())) if "git_commit" in f else []}
             for p, f in zip(paths, frames)]
    write_json_atomic(manifest_path, {
        "config_hash": settings_hash(config), "config": config, "git_commit": git_commit(),
        "versions": package_versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "metrics": {"path": out_path, "rows": len(frame)}, "files": files,
    })
    log.info(f"aggregated {len(frame)} rows from {len(paths)} files; manifest {manifest_path}")


def _read_rows(paths: list[str]):
    import pandas as pd

    if not paths:
        raise NoiseKDError("no result files to read")
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def make_table(plan: Plan, name: str, paths: list[str], out: dict) -> None:
    from . import report

    table = report.TABLES[name](_read_rows(paths), plan)
    report.write_table(table, out["md"], out["tex"], out["csv"])
    log.info(f"{name} written from {len(paths)} result files")


def make_figure(plan: Plan, name: str, paths: list[str], out: dict) -> None:
    from . import report

    figure = report.FIGURES[name](_read_rows(paths), plan)
    report.write_figure(figure, out["png"], out["pdf"])
    log.info(f"{name} written from {len(paths)} result files")


def linear_study(study: dict, out: dict) -> None:
    """Seed 003's deep linear study: tidy frames, the success/failure table and learning curves."""
    from . import linear_study as ls
    from . import report

    t0 = time.perf_counter()
    results, curves = ls.run_study(ls.StudyConfig.from_dict(study))
    for key, frame in (("results", results), ("curves", curves)):
        with atomic_path(out[key]) as tmp:
            frame.to_parquet(tmp, index=False)
    report.write_table(ls.study_table(results), out["md"], out["tex"], out["csv"])
    report.write_figure(ls.study_figure(curves, results), out["png"], out["pdf"])
    log.info(f"linear study: {len(results)} result rows in {time.perf_counter() - t0:.1f}s")


# ---------------------------------------------------------------------------------------------
# Script plumbing


def check_gpu_job(gpus: int, device: str | None, environ=os.environ, cuda_available=torch.cuda.is_available) -> None:
    """A SLURM job that asked for GPUs and sees none (a bad node, a wrong CUDA_VISIBLE_DEVICES) fails at
    once: with `device: auto` it would otherwise train on the CPU until its runtime limit."""
    if gpus > 0 and device in (None, "auto") and environ.get("SLURM_JOB_ID") and not cuda_available():
        raise NoiseKDError(
            f"SLURM job {environ['SLURM_JOB_ID']} on {environ.get('SLURMD_NODENAME', 'this node')} asked for "
            f"{gpus} GPU(s) (config key resources.gpu) but sees no CUDA device (CUDA_VISIBLE_DEVICES="
            f"{environ.get('CUDA_VISIBLE_DEVICES')!r}); set device: cpu to run on CPUs")


def run_step(snakemake, step: Callable[..., None], **kwargs) -> None:
    """Run one step inside a Snakemake `script:` with logging to the rule's log file and stderr.

    A NoiseKDError (bad input, bad config, interrupted training) ends the job with its one-line
    message and exit status 1; anything else keeps its traceback in the log.
    """
    handlers = [logging.StreamHandler(sys.stderr)]
    if snakemake.log:
        Path(snakemake.log[0]).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(snakemake.log[0], mode="a"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(message)s")
    log.info(f"rule {snakemake.rule} {dict(snakemake.wildcards)}")
    try:
        check_gpu_job(int(getattr(snakemake.resources, "gpu", 0) or 0), snakemake.config.get("device", "auto"))
        step(**kwargs)
    except NoiseKDError as exc:
        log.error(f"error: {exc}")
        sys.exit(1)
    except Exception:
        log.exception("unexpected error")
        raise
