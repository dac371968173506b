"""The workflow's steps as plain functions of settings, paths and a runtime.

Each Snakemake rule calls one of these through a three-line script in `workflow_scripts/`, so every
step can also be run and tested from Python without Snakemake.  A step's `settings` are its rule
`params:` (what the plan resolved for that job, `noisekd.plan.Plan.settings`): everything that
changes its numbers, and the lineage that its outputs record.  `runtime` (`noisekd.settings.Runtime`)
says only where and how fast it runs.  Every output is written atomically.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import lineage, selection, teacher_logits
from .checkpoints import inference_model, load_model, model_summary, save_model
from .data import ImageData, load_image_data, save_image_data, stratified_split
from .errors import NoiseKDError
from .evaluate import (
    accuracy,
    attack_rows,
    evaluation_rows,
    finish_rows,
    headline,
    load_corrupted_stack,
    write_rows,
)
from .execution import TrainingInterrupted, resolve_device, resolve_numerics, run_side_by_side
from .io import atomic_path, write_json_atomic

# The torch-free steps and the job plumbing, for the workflow scripts that import them from here.
from .jobs import (  # noqa: F401
    check_results,
    make_report,
    run_step,
    runtime_of,
    scorecard,
    select_teacher,
    settings_of,
)
from .layout import CHECKPOINT, Layout
from .lineage import read_rows_settings, write_rows_table
from .methods import MethodParams, get_method
from .models import build_model
from .noise import corrupt_labels
from .provenance import provenance
from .settings import AttackSetting, Augmentation, Runtime, TrainConfig, WRNSpec
from .train import fit

log = logging.getLogger("noisekd")


# ---------------------------------------------------------------------------------------------
# Data


def prepare_dataset(settings: dict, runtime: Runtime, out: dict[str, str]) -> None:
    """Train/val/test .npz for one dataset.  `val` is a seeded stratified hold-out of the training
    set where the settings hold one out (teachers can then be selected on it), else empty."""
    from .sources import prepare_dataset as load

    data = settings["data"]
    source = data["source"]
    if source == "digits":
        options = {k: data[k] for k in ("size", "test_fraction") if k in data}
        options["seed"] = data.get("split_seed", 0)
    else:
        options = {"download": True}
    splits = load(source, Path(runtime.data_dir) / source, **options)
    train, test = splits["train"], splits["test"]
    if data["holdout"]:
        keep, held = stratified_split(train.labels, data["holdout"]["fraction"], data["holdout"]["seed"])
        train, val = train.subset(keep), train.subset(held)
    else:
        val = train.subset(torch.zeros(0, dtype=torch.long))
    for name, split in (("train", train), ("val", val), ("test", test)):
        save_image_data(split, out[name])
        log.info(f"{source} {name}: {len(split)} images of shape {tuple(split.images.shape[1:])}")


def prepare_ood(settings: dict, runtime: Runtime, test_path: str, out_path: str) -> None:
    from .sources import prepare_ood as load

    ood = dict(settings["ood"])
    source = ood.pop("source")
    if source == "printed_digits":
        ood.setdefault("size", load_image_data(test_path).images.shape[-1])
    else:
        ood["download"] = True
    data = load(source, Path(runtime.data_dir) / source, **ood)
    save_image_data(data, out_path)
    log.info(f"out-of-distribution set {source}: {len(data)} images")


def fetch_corruptions(runtime: Runtime, out_path: str) -> None:
    """Download, md5-check and extract the released CIFAR-10-C into <data_dir>/cifar10c (a local job:
    compute nodes often have no internet), then record where it lies."""
    from .sources import download_cifar10c
    from .sources.cifar10c import CIFAR10C_MD5

    folder = download_cifar10c(Path(runtime.data_dir) / "cifar10c")
    write_json_atomic(out_path, {"folder": str(folder), "archive_md5": CIFAR10C_MD5})


def prepare_corruptions(settings: dict, runtime: Runtime, test_path: str, out_path: str) -> None:
    """A (19, 5, N, C, H, W) uint8 stack in the test set's order: the released CIFAR-10-C, or the
    corruptions regenerated with `noisekd.corruptions` (any dataset)."""
    from .corruptions import CORRUPTIONS, corrupt_all

    spec = settings["corruptions"]
    test = load_image_data(test_path)
    n, c, h, w = test.images.shape
    with atomic_path(out_path) as tmp:
        stack = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(CORRUPTIONS), 5, n, c, h, w))
        if spec["source"] == "released":
            from .sources import load_cifar10c

            for i, name in enumerate(CORRUPTIONS):
                for s in range(1, 6):
                    root = Path(runtime.data_dir) / "cifar10c"
                    data = load_cifar10c(root, name, s)  # fetched by fetch_corruptions
                    if data.images.shape != test.images.shape or not torch.equal(data.labels, test.labels):
                        raise NoiseKDError(
                            f"CIFAR-10-C {name} (severity {s}, under {root}) holds {tuple(data.images.shape)} "
                            f"images whose labels are not the {test_path} test set's {tuple(test.images.shape)} "
                            "in order")
                    stack[i, s - 1] = data.images.numpy()
        else:
            nhwc = test.images.permute(0, 2, 3, 1).numpy()
            if c == 1:
                nhwc = np.repeat(nhwc, 3, axis=3)
            t0 = time.perf_counter()
            for i, name, severity, out in corrupt_all(nhwc, spec["seed"]):
                stack[i, severity - 1] = np.ascontiguousarray(out.transpose(0, 3, 1, 2)[:, :c])
                if severity == 5:
                    log.info(f"{name}: 5 severities x {n} images in {time.perf_counter() - t0:.1f}s")
                    t0 = time.perf_counter()
        stack.flush()
        del stack


def corrupt_training_labels(settings: dict, train_path: str, out_path: str) -> None:
    """Static label corruption shared by the teacher and the students of a Messy Collaboration cell."""
    rate, seed = settings["labels"]["rate"], settings["labels"]["seed"]
    train = load_image_data(train_path)
    labels, indices = corrupt_labels(train.labels, rate, train.num_classes, seed)
    with atomic_path(out_path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, labels=labels.numpy(), corrupted_indices=indices.numpy(), rate=rate, seed=seed)
    changed = int((labels != train.labels).sum())
    log.info(f"label corruption {rate}: {len(indices)} labels re-drawn, {changed} actually changed")


def load_training_labels(train: ImageData, labels_path: str | None, expected: dict | None = None) -> ImageData:
    """The training set with the statically corrupted labels of `labels_path`, if given; its meta
    records the rate, seed, file and re-drawn indices, which the run summary keeps.  `expected`, the
    run's `labels` settings, must match the file's rate and seed."""
    if not labels_path:
        if expected:
            raise NoiseKDError(f"the settings ask for corrupted labels {expected}, but no label file was given")
        return train
    try:
        with np.load(labels_path) as z:
            labels = torch.from_numpy(z["labels"].astype(np.int64))
            rate, seed, indices = float(z["rate"]), int(z["seed"]), z["corrupted_indices"].tolist()
    except (OSError, ValueError, KeyError) as exc:
        raise NoiseKDError(f"label file {labels_path} is unreadable: {exc}") from None
    if labels.shape != train.labels.shape:
        raise NoiseKDError(f"label file {labels_path} does not match the training set size")
    if expected is not None and (rate, seed) != (expected["rate"], expected["seed"]):
        raise NoiseKDError(f"label file {labels_path} has rate {rate} and seed {seed}, the settings ask for "
                           f"rate {expected['rate']} and seed {expected['seed']}")
    corruption = {"rate": rate, "seed": seed, "file": str(labels_path), "corrupted_indices": indices}
    return train.with_labels(labels, label_corruption=corruption)


# ---------------------------------------------------------------------------------------------
# Training


def _normalisation(train: ImageData) -> tuple[list[float], list[float]]:
    x = train.images.float().div_(255)
    return x.mean((0, 2, 3)).tolist(), x.std((0, 2, 3)).tolist()


def _network(block: dict, train: ImageData) -> WRNSpec:
    """A run's network from its settings' `network` block, with the data's classes and normalisation."""
    mean, std = _normalisation(train)
    net = block["network"]
    return WRNSpec(net["depth"], net["width"], train.num_classes, float(net.get("dropout", 0.0)), 3, tuple(mean),
                   tuple(std))


def _training_set(settings: dict, inputs: dict, runtime: Runtime):
    torch.set_num_threads(runtime.threads)
    share_compile_cache(runtime)
    device = resolve_device(runtime.device)
    train = load_training_labels(load_image_data(inputs["train"]), inputs.get("labels"), settings["labels"])
    return device, train.to(device)


def train_teachers(settings: dict, seeds: list[int], inputs: dict, outs: list[dict], runtime: Runtime,
                   name: dict | None = None) -> None:
    """Every seed of one teacher kind, side by side on one GPU (one after another on a CPU); `name`
    (dataset, kind) goes into the run summaries, with each seed's accuracy on the held-out splits."""
    device, train = _training_set(settings, inputs, runtime)
    held_out = {split: load_image_data(inputs[split]).to(device) for split in ("val", "test")}
    _train_seeds("teacher", settings, seeds, train, outs, device, runtime, get_method("baseline"), MethodParams(),
                 run_info=name or {}, finish=lambda model: {f"{split}_acc": accuracy(model, data)
                                                            for split, data in held_out.items() if len(data)})


def train_students(settings: dict, seeds: list[int], inputs: dict, outs: list[dict], runtime: Runtime,
                   teacher_seed: int | None = None, name: dict | None = None) -> None:
    """Every seed of one student cell, side by side on one GPU (one after another on a CPU); `name`
    (dataset, cell) goes into the run summaries.

    The teacher is `inputs["teacher"]`, the selected teacher's model (its seed is `teacher_seed`), or
    `inputs["teacher_logits"]`, its logits table (which records its seed), where the plan chose one."""
    device, train = _training_set(settings, inputs, runtime)
    method = get_method(settings["student"]["method"])
    params = MethodParams.from_dict(settings["student"]["method_params"])
    teacher, cached = None, None
    if method.teacher:
        aug = Augmentation(**settings["student"]["augmentation"])
        teacher, cached, teacher_seed = _load_teacher(settings, inputs, teacher_seed, train, aug, runtime, device)
    _train_seeds("student", settings, seeds, train, outs, device, runtime, method, params, teacher, cached,
                 run_info={**(name or {}), "teacher_seed": teacher_seed},
                 finish=lambda model: {"teacher_seed": teacher_seed})


def _train_seeds(role: str, settings: dict, seeds: list[int], train: ImageData, outs: list[dict], device,
                 runtime: Runtime, method, params, teacher=None, cached=None, run_info: dict | None = None,
                 finish=lambda model: {}) -> None:
    """Train every seed of a job from its settings' `role` block ("teacher" or "student"), side by side;
    `finish(model)` adds to each run's summary."""
    block = settings[role]
    spec, aug = _network(block, train), Augmentation(**block["augmentation"])

    def run(seed: int, out: dict) -> None:
        # fit trains an inference copy of the teacher, so the runs can share the loaded one
        result = _fit(build_model(spec, seed), train, TrainConfig.from_settings(block["train"], runtime.speed, seed),
                      method, params, teacher, aug, out, device, seed, len(seeds),
                      run_info={**(run_info or {}), "role": role, "seed": seed,
                                "label_corruption": train.meta.get("label_corruption")},
                      teacher_logits=cached)
        _finish_run(result, out, extra={**finish(result.model), "settings": {**settings, "seed": seed}})

    _train_side_by_side(run, seeds, outs, device)


def _load_teacher(settings: dict, inputs: dict, teacher_seed, train: ImageData, aug: Augmentation,
                  runtime: Runtime, device):
    """(teacher model or None, logits table or None, teacher seed) of a student job, refused unless
    the file is of the teacher these settings name (and of the selected seed, where one is given)."""
    path = inputs.get("teacher_logits") or inputs.get("teacher")
    if not path:
        raise NoiseKDError(f"method {settings['student']['method']} needs a teacher, but the job was given none")
    if inputs.get("teacher_logits"):
        precision, _ = resolve_numerics(TrainConfig.from_settings(settings["student"]["train"], runtime.speed, 0), device)
        cached, ident = teacher_logits.load(path, train, aug, precision, train.num_classes)
        teacher, found_settings, found_seed = None, ident.get("settings") or {}, ident.get("teacher_seed")
        log.info(f"teacher logits of seed {found_seed} from {path} ({tuple(cached.shape)}, {cached.dtype})")
        cached = cached.to(device)  # once: the seeds trained side by side share it
    else:
        teacher, cached = load_model(path, device=device), None
        summary = model_summary(path)
        found_settings, found_seed = summary.get("settings") or {}, summary.get("run", {}).get("seed")
        if found_seed != teacher_seed:
            raise NoiseKDError(f"teacher {path} is of seed {found_seed}, the selection names seed {teacher_seed}")
    expected = {"data": settings["data"], "teacher": settings["teacher"]}
    diff = lineage.first_difference({k: found_settings.get(k) for k in expected}, expected)
    if diff:
        raise NoiseKDError(f"teacher {path} was trained with {diff[0]} = {lineage.canonical(diff[1])}, "
                           f"this student's settings name {lineage.canonical(diff[2])}")
    return teacher, cached, found_seed


def share_compile_cache(runtime: Runtime) -> None:
    """With train.compile, torch.compile's caches go to `<results_dir>/.cache/torchinductor` (unless
    TORCHINDUCTOR_CACHE_DIR says otherwise), so every later job of the same networks and shapes, on any
    node that shares the folder, reuses the kernels that the first one compiled."""
    if runtime.speed.get("compile"):
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", Layout(runtime.results_dir).compile_cache)


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
    return Path(out["model"]).with_name(CHECKPOINT)


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
    log.info("final summary: " + json.dumps({k: v for k, v in summary.items() if k not in ("history", "settings")},
                                            default=str))


def compute_teacher_logits(settings: dict, teacher_seed: int, inputs: dict, out_path: str, runtime: Runtime) -> None:
    """The selected teacher's logits of every training image under every augmentation variant."""
    torch.set_num_threads(runtime.threads)
    device = resolve_device(runtime.device)
    teacher = load_model(inputs["model"], device=device)
    found = model_summary(inputs["model"]).get("run", {}).get("seed")
    if found != teacher_seed:
        raise NoiseKDError(f"teacher {inputs['model']} is of seed {found}, the selection names seed {teacher_seed}")
    train = load_image_data(inputs["train"]).to(device)
    aug = Augmentation(**settings["teacher"]["augmentation"])
    numerics = TrainConfig.from_settings(settings["teacher"]["train"], runtime.speed, 0)
    precision, channels_last = resolve_numerics(numerics, device)
    logits = teacher_logits.compute(teacher, train, aug, precision, channels_last, runtime.eval_batch_size,
                                    log=log.info)
    ident = {**teacher_logits.identity(inputs["model"], train, aug, precision), "teacher_seed": teacher_seed,
             "settings": settings}
    teacher_logits.save(out_path, logits, ident, provenance=provenance(settings, device))
    log.info(f"wrote {out_path}: {tuple(logits.shape)} {logits.dtype}")


# ---------------------------------------------------------------------------------------------
# Evaluation


def _eval_data(inputs: dict, device):
    test = load_image_data(inputs["test"]).to(device)
    ood = load_image_data(inputs["ood"]).to(device) if inputs.get("ood") else None
    return test, ood


def _model_rows(model_path: str, device, test, ood, stack: str | None, batch_size: int) -> list[dict]:
    """Clean, OOD and corruption rows of one model (the corruption stack memory-mapped, read in one pass)."""
    from .corruptions import CORRUPTIONS

    t0 = time.perf_counter()
    model = inference_model(load_model(model_path, device=device))
    corrupted = load_corrupted_stack(stack, test, CORRUPTIONS) if stack else None
    rows = evaluation_rows(model, test, ood, corrupted, batch_size)
    log.info(headline(rows))
    log.info(f"evaluated {model_path} in {time.perf_counter() - t0:.1f}s ({len(rows)} rows)")
    return rows


def evaluate_model(settings: dict, identity: dict, model_path: str, inputs: dict, out_path: str, runtime: Runtime,
                   extra_rows: list[dict] = ()) -> None:
    """Clean, OOD and corruption metrics of one model as tidy parquet rows."""
    torch.set_num_threads(runtime.threads)
    device = resolve_device(runtime.device)
    test, ood = _eval_data(inputs, device)
    rows = _model_rows(model_path, device, test, ood, inputs.get("corruptions"), runtime.eval_batch_size)
    rows += list(extra_rows)
    write_rows(finish_rows(rows, identity, provenance(settings, device)), out_path, settings=settings)


def student_identity(settings: dict, dataset: str, cell: str, summary_path: str) -> dict:
    """The identity columns of a student run's rows: who it is, and the teacher seed it learnt from."""
    summary = json.loads(Path(summary_path).read_text())
    seed, block = settings["seed"], settings["student"]
    if summary.get("settings", {}).get("seed", seed) != seed:
        raise NoiseKDError(f"{summary_path} is of seed {summary['settings']['seed']}, this job evaluates seed {seed}")
    return {
        "run_id": f"{dataset}/{cell}/seed{seed}", "role": "student", "dataset": dataset,
        "method": block["method"], "cell": cell, "params": json.dumps(block["method_params"], sort_keys=True),
        "label_corruption": (settings["labels"] or {}).get("rate", 0.0), "seed": seed,
        "teacher_seed": summary.get("teacher_seed"),
    }


def teacher_identity(settings: dict, dataset: str, kind: str, seed: int) -> dict:
    """The identity columns of the selected teacher's rows."""
    return {
        "run_id": f"{dataset}/teacher-{kind}/seed{seed}", "role": "teacher", "dataset": dataset,
        "method": "teacher", "cell": kind, "params": json.dumps({"dropout": settings["teacher"]["network"]["dropout"]}),
        "label_corruption": (settings["labels"] or {}).get("rate", 0.0), "seed": seed, "teacher_seed": seed,
    }


def evaluate_teacher(settings: dict, dataset: str, kind: str, teacher_seed: int, inputs: dict, out_path: str,
                     runtime: Runtime) -> None:
    """The selected teacher's metrics, plus every candidate seed's selection accuracy."""
    by = settings["selection"]["by"]
    selected = selection.selected_seed(inputs["selection"], by)
    if selected != teacher_seed:
        raise NoiseKDError(f"{inputs['selection']} selects seed {selected} by {by} accuracy, this job was given "
                           f"seed {teacher_seed}")
    identity = teacher_identity(settings, dataset, kind, teacher_seed)
    candidates = [{**row, "run_id": f"{dataset}/teacher-{kind}/seed{row['seed']}"}
                  for row in selection.candidate_rows(inputs["selection"], by)]
    evaluate_model(settings, identity, inputs["model"], inputs, out_path, runtime, extra_rows=candidates)


def _cell_seeds(settings: dict, seeds: list[int], dataset: str, cell: str, inputs: dict, outs: list[str],
                compute: Callable[[dict, dict, str], list[dict]]) -> None:
    """Run `compute(seed settings, identity, model path) -> rows` for every seed of a student cell in
    one job, and write each seed's result file.

    Each seed's rows go first to a side file (`Layout.partial`, not a Snakemake output, so a failed
    job's retry finds it) that records the seed's settings and its model's hash; a retry reuses it
    only if both still match, so a job killed after three seeds redoes only the other two.
    """
    import hashlib

    import pyarrow.parquet as pq

    results = []
    for seed, model, summary, out in zip(seeds, inputs["models"], inputs["summaries"], outs, strict=True):
        seed_settings = {**settings, "seed": int(seed)}
        key = {"settings": seed_settings, "model_sha256": hashlib.sha256(Path(model).read_bytes()).hexdigest()}
        partial = Layout.partial(out)
        if Path(partial).is_file() and read_rows_settings(partial) == key:
            log.info(f"seed {seed}: reusing {partial} from an earlier attempt")
        else:
            identity = student_identity(seed_settings, dataset, cell, summary)
            write_rows(compute(seed_settings, identity, model), partial, settings=key)
        results.append((partial, out, seed_settings))
    for partial, out, seed_settings in results:  # the side file's rows, unchanged, under the seed's settings
        write_rows_table(pq.read_table(partial), out, seed_settings)
    for partial, _, _ in results:
        Path(partial).unlink()


def evaluate_students(settings: dict, seeds: list[int], dataset: str, cell: str, inputs: dict, outs: list[str],
                      runtime: Runtime) -> None:
    """Clean, OOD and corruption metrics of every seed of a student cell (the data loaded once)."""
    torch.set_num_threads(runtime.threads)
    device = resolve_device(runtime.device)
    test, ood = _eval_data(inputs, device)

    def compute(seed_settings, identity, model_path):
        rows = _model_rows(model_path, device, test, ood, inputs.get("corruptions"), runtime.eval_batch_size)
        return finish_rows(rows, identity, provenance(seed_settings, device))

    _cell_seeds(settings, seeds, dataset, cell, inputs, outs, compute)


def attack_students(settings: dict, seeds: list[int], dataset: str, cell: str, inputs: dict, outs: list[str],
                    runtime: Runtime) -> None:
    """The PGD attacks of every seed of a student cell, each seed's restarts drawn from its own seed."""
    torch.set_num_threads(runtime.threads)
    device = resolve_device(runtime.device)
    test = load_image_data(inputs["test"])
    attacks = [AttackSetting(**a) for a in settings["attack"]["attacks"]]

    def compute(seed_settings, identity, model_path):
        model = inference_model(load_model(model_path, device=device))
        rows = attack_rows(model, test, attacks, seed=seed_settings["seed"],
                           batch_size=settings["attack"]["batch_size"], log=log.info)
        return finish_rows(rows, identity, provenance(seed_settings, device))

    _cell_seeds(settings, seeds, dataset, cell, inputs, outs, compute)


# ---------------------------------------------------------------------------------------------
# Aggregation


def aggregate(runs: list[str], expected: dict, by: str, out_path: str, manifest_path: str) -> None:
    """All result rows in one parquet, plus a manifest tracing every file to its settings and code."""
    import hashlib

    import pandas as pd

    from .provenance import git_commit, package_versions

    check_results(runs, expected, by)
    frames = [pd.read_parquet(p) for p in runs]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    with atomic_path(out_path) as tmp:
        frame.to_parquet(tmp, index=False)
    files = [{"path": p, "sha256": hashlib.sha256(Path(p).read_bytes()).hexdigest(), "rows": len(f),
              "settings_hash": sorted(set(f["settings_hash"].dropna())), "settings": read_rows_settings(p),
              "git_commit": sorted(set(f["git_commit"].dropna())) if "git_commit" in f else []}
             for p, f in zip(runs, frames)]
    write_json_atomic(manifest_path, {
        "git_commit": git_commit(), "versions": package_versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "metrics": {"path": out_path, "rows": len(frame)}, "files": files,
    })
    log.info(f"aggregated {len(frame)} rows from {len(runs)} files; manifest {manifest_path}")


def linear_study(settings: dict, out: dict) -> None:
    """Hong et al.'s deep linear study (clean->noisy student-teacher learning): tidy frames, the success/failure table and learning curves."""
    from . import linear_study as ls
    from .tables import write_figure, write_table

    t0 = time.perf_counter()
    results, curves = ls.run_study(ls.StudyConfig.from_dict(settings))
    for key, frame in (("results", results), ("curves", curves)):
        with atomic_path(out[key]) as tmp:
            frame.to_parquet(tmp, index=False)
    write_table(ls.study_table(results), out["md"], out["tex"], out["csv"], out["html"])
    write_figure(ls.study_figure(curves, results), out["png"], out["pdf"])
    log.info(f"linear study: {len(results)} result rows in {time.perf_counter() - t0:.1f}s")
