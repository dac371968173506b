"""Evaluation: clean, out-of-distribution, corruption (mCA, conditional) and PGD robust accuracy.

Everything runs on device-resident uint8 data in large no-grad batches (attacks excepted) and
returns tidy rows: one dict per (metric, condition) with the columns of `ROW_COLUMNS`.  The rows
are written to parquet by `write_rows`, atomically.

Metric names:
- test_acc: clean test accuracy; ood_acc: accuracy on the out-of-distribution set (CINIC-10's
  ImageNet subset, or the demo's printed digits);
- corruption_acc / corruption_cond_acc (per corruption x severity): accuracy on the corrupted image,
  and Gu et al.'s conditional accuracy (among images whose clean version is classified correctly);
- mca / mca_cond: their means over all corruption x severity cells (19 x 5 for CIFAR-10-C);
- robust_acc_final_min_over_runs: the paper authors' aggregate (worst of the whole-test-set runs,
  each scored by its final iterate); robust_acc_worst_of_restarts: per-sample worst case over the
  restarts and every iterate (`noisekd.settings.ROBUST_METRICS`), both from the same attack.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from .attacks import robust_accuracy_curve
from .data import ImageData, to_float
from .errors import NoiseKDError
from .lineage import SETTINGS_METADATA_KEY, read_rows_settings, write_rows_table  # noqa: F401 (re-exported)
from .settings import AUTHORS_AGGREGATE, ROBUST_METRICS, WORST_OF_RESTARTS, AttackSetting

ROW_COLUMNS = (
    "run_id", "role", "dataset", "method", "cell", "params", "label_corruption", "seed", "teacher_seed",
    "metric", "corruption", "severity", "attack", "steps", "eps", "step_size", "restarts", "value",
    "settings_hash", "git_commit", "versions", "device",
)


ATTACK_BATCH_SIZE = 5000
"""(sample, restart) rows per PGD pass in evaluation (config key evaluation.pgd.batch_size)."""


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Predicted classes for uint8 images (on the model's device), eval mode, fp32."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for start in range(0, images.shape[0], batch_size):
            x = to_float(images[start : start + batch_size].to(device, non_blocking=True))
            out.append(model(x).argmax(1))
    finally:
        model.train(was_training)
    if not out:
        return torch.empty(0, dtype=torch.long, device=device)
    return torch.cat(out)


def accuracy(model: torch.nn.Module, data: ImageData, batch_size: int = 1024) -> float:
    pred = predict(model, data.images, batch_size)
    return float((pred == data.labels.to(pred.device)).double().mean())


def corruption_rows(
    model: torch.nn.Module,
    clean: ImageData,
    corrupted: Iterable[tuple[str, int, ImageData]],
    batch_size: int = 1024,
) -> list[dict]:
    """Accuracy and conditional accuracy for every (corruption, severity) cell, plus mCA rows."""
    clean_pred = predict(model, clean.images, batch_size)
    labels = clean.labels.to(clean_pred.device)
    clean_ok = clean_pred == labels
    rows, accs, conds = [], [], []
    for name, severity, data in corrupted:
        if not torch.equal(data.labels.to(labels.device), labels):
            raise NoiseKDError(f"corrupted set {name}-{severity} is not in the clean test order (labels differ)")
        pred = predict(model, data.images, batch_size)
        correct = pred == labels
        acc = float(correct.double().mean())
        # Gu et al.: P(correct on corrupted | correct on clean); undefined if nothing is correct.
        cond = float(correct[clean_ok].double().mean()) if bool(clean_ok.any()) else math.nan
        accs.append(acc)
        conds.append(cond)
        rows.append({"metric": "corruption_acc", "corruption": name, "severity": severity, "value": acc})
        rows.append({"metric": "corruption_cond_acc", "corruption": name, "severity": severity, "value": cond})
    if accs:
        rows.append({"metric": "mca", "value": float(np.mean(accs))})
        rows.append({"metric": "mca_cond", "value": float(np.nanmean(conds)) if not all(map(math.isnan, conds)) else math.nan})
    return rows


def evaluation_rows(model: torch.nn.Module, test: ImageData, ood: ImageData | None = None,
                    corrupted: Iterable[tuple[str, int, ImageData]] | None = None, batch_size: int = 1024) -> list[dict]:
    """Clean accuracy, out-of-distribution accuracy and the corruption cells (with mCA) of one model."""
    rows = [{"metric": "test_acc", "value": accuracy(model, test, batch_size)}]
    if ood is not None:
        rows.append({"metric": "ood_acc", "value": accuracy(model, ood, batch_size)})
    if corrupted is not None:
        rows += corruption_rows(model, test, corrupted, batch_size)
    return rows


def headline(rows: list[dict]) -> str:
    """The headline metrics of result rows, for a log line: test, OOD, mCA (plain and conditional)."""
    return "  ".join(f"{r['metric']} {100 * r['value']:.2f}%" for r in rows
                     if r["metric"] in ("test_acc", "ood_acc", "mca", "mca_cond"))


def attack_rows(
    model: torch.nn.Module,
    data: ImageData,
    settings: Iterable[AttackSetting],
    seed: int,
    batch_size: int = ATTACK_BATCH_SIZE,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """PGD robust accuracy for each setting, both aggregates, with a seeded restart generator.

    Settings that differ only in their step count (Table 4) share one attack of the largest count:
    PGD-T is the first T steps of the longer run from the same random start (`robust_accuracy_curve`).
    Every (sample, restart) runs all its steps (no early drop), so each run's final iterate is scored
    as PGD scores it, and the any-iterate worst case comes from the same trajectories.  Each group of
    settings draws its random starts from its own seeded generator.
    """
    device = next(model.parameters()).device
    x = to_float(data.images.to(device))
    y = data.labels.to(device)
    settings = list(settings)
    groups: dict[tuple, list[AttackSetting]] = {}
    for s in settings:
        groups.setdefault((s.eps, s.step_size, s.restarts), []).append(s)
    results = {}
    for i, ((eps, step_size, restarts), members) in enumerate(groups.items()):
        generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + i)
        steps = sorted({s.steps for s in members})
        t0 = time.perf_counter()
        curve = robust_accuracy_curve(model, x, y, eps, step_size, steps, restarts=restarts,
                                      generator=generator, batch_size=batch_size, early_stop=False)
        for t, res in zip(steps, curve):
            results[AttackSetting(t, eps, step_size, restarts)] = {
                AUTHORS_AGGREGATE.name: res["min_over_runs"],
                WORST_OF_RESTARTS.name: res["any_iterate"]["worst_of_restarts"]}
            log(f"PGD-{t} eps {eps:.4f} step {step_size:.4f} x{restarts}: authors' aggregate (final iterate) "
                f"{100 * res['min_over_runs']:.2f}%  worst of restarts (any iterate) "
                f"{100 * res['any_iterate']['worst_of_restarts']:.2f}%")
        log(f"  ({len(steps)} step count(s) from one {max(steps)}-step attack in {time.perf_counter() - t0:.1f}s)")
    rows = []
    for s in dict.fromkeys(settings):
        res = results[s]
        cond = {"attack": "pgd", "steps": s.steps, "eps": s.eps, "step_size": s.step_size, "restarts": s.restarts}
        rows += [{**cond, "metric": m.name, "value": res[m.name]} for m in ROBUST_METRICS]
    return rows


def finish_rows(rows: list[dict], identity: dict, provenance: dict) -> list[dict]:
    """Fill identity (run, method, seed...) and provenance columns; every row gets every column."""
    out = []
    for row in rows:
        full = {col: None for col in ROW_COLUMNS}
        full.update(identity)
        full.update(provenance)
        full.update(row)
        if isinstance(full.get("params"), dict):
            full["params"] = json.dumps(full["params"], sort_keys=True)
        out.append(full)
    return out


def rows_frame(rows: list[dict]):
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(ROW_COLUMNS))
    for col in ("severity", "steps", "restarts", "seed", "teacher_seed"):
        frame[col] = frame[col].astype("Int64")
    for col in ("eps", "step_size", "value", "label_corruption"):
        frame[col] = frame[col].astype("float64")
    return frame


def write_rows(rows: list[dict], path: str | Path, settings: dict | None = None) -> None:
    """Rows to parquet; `settings` (what the rows were computed with, which their settings_hash names;
    see `noisekd.lineage`) go into the file's key-value metadata (`read_rows_settings`)."""
    import pyarrow as pa

    write_rows_table(pa.Table.from_pandas(rows_frame(rows), preserve_index=False), path, settings)


def load_corrupted_stack(path: str | Path, clean: ImageData, names: tuple[str, ...]) -> Iterable[tuple[str, int, ImageData]]:
    """Iterate over a (corruptions, 5, N, C, H, W) uint8 .npy stack written by the prepare step."""
    try:
        stack = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise NoiseKDError(f"corruption stack {path} is unreadable (truncated or corrupt?): {exc}") from None
    if stack.shape[0] != len(names) or stack.shape[2:] != tuple(clean.images.shape):
        raise NoiseKDError(f"corruption stack {path} has shape {stack.shape}, expected ({len(names)}, 5, "
                           f"{', '.join(map(str, clean.images.shape))})")
    for i, name in enumerate(names):
        for s in range(stack.shape[1]):
            yield name, s + 1, ImageData(torch.from_numpy(np.array(stack[i, s])), clean.labels, clean.classes)

