"""Command line: `python -m noisekd evaluate CHECKPOINT --dataset digits --out rows.parquet`.

Evaluates one trained checkpoint outside the workflow: clean accuracy, out-of-distribution accuracy,
every corruption x severity cell (accuracy, conditional accuracy, mCA) and PGD robust accuracy, and
writes the tidy parquet rows the workflow writes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .checkpoints import inference_model, load_model, model_summary
from .config import protocol_attack
from .data import ImageData
from .errors import NoiseKDError
from .evaluate import ATTACK_BATCH_SIZE, attack_rows, evaluation_rows, finish_rows, headline, write_rows
from .execution import resolve_device
from .jobs import keep_freed_memory
from .provenance import provenance
from .settings import AttackSetting

log = logging.getLogger("noisekd")


def generated_corruptions(test: ImageData, seed: int):
    """All 19 x 5 corrupted copies of `test`, generated one cell at a time (bounded memory)."""
    from .corruptions import corrupt_all

    nhwc = test.images.permute(0, 2, 3, 1).cpu().numpy()
    for _, name, severity, out in corrupt_all(nhwc, seed):
        yield name, severity, ImageData(torch.from_numpy(np.ascontiguousarray(out.transpose(0, 3, 1, 2))),
                                        test.labels, test.classes)


def released_corruptions(test: ImageData, root: Path):
    from .sources import CIFAR10C_CORRUPTIONS, load_cifar10c

    for name in CIFAR10C_CORRUPTIONS:
        for s in range(1, 6):
            yield name, s, load_cifar10c(root, name, s, download=True)


def evaluation_sets(args, size: int):
    from .sources import load_cifar10, load_cinic_imagenet, load_digits, load_svhn, render_printed_digits

    root = Path(args.data_dir)
    if args.dataset == "digits":
        test = load_digits("test", size=size, seed=args.split_seed)
        ood = render_printed_digits(per_class=args.ood_per_class, size=size, seed=0)
    elif args.dataset == "cifar10":
        test = load_cifar10(root / "cifar10", "test", download=True)
        ood = load_cinic_imagenet(root / "cinic10", per_class=args.ood_per_class, seed=0, download=True)
    elif args.dataset == "svhn":
        test, ood = load_svhn(root / "svhn", "test", download=True), None
    else:
        raise NoiseKDError(f"unknown dataset {args.dataset!r}; known: digits, cifar10, svhn")
    if args.corruptions == "none":
        corrupted = None
    elif args.corruptions == "released":
        corrupted = released_corruptions(test, root / "cifar10c")
    else:
        corrupted = generated_corruptions(test, args.seed)
    return test, (None if args.no_ood else ood), corrupted


def evaluate_command(args) -> None:
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    model = inference_model(load_model(args.checkpoint, device=device))  # invalid checkpoints end here, in one line
    summary = model_summary(args.checkpoint)
    t0 = time.perf_counter()
    trained_size = summary.get("image_size")  # absent in models saved before it was recorded
    size = args.size or (trained_size[0] if trained_size else 16)
    test, ood, corrupted = evaluation_sets(args, size=size)
    if trained_size and list(test.images.shape[-2:]) != list(trained_size):
        raise NoiseKDError(f"checkpoint {args.checkpoint} was trained on {trained_size[0]}x{trained_size[1]} images, "
                           f"the {args.dataset} test set here is {test.images.shape[-2]}x{test.images.shape[-1]}"
                           + (" (--size)" if args.dataset == "digits" else ""))
    test, ood = test.to(device), (ood.to(device) if ood is not None else None)
    rows = evaluation_rows(model, test, ood, corrupted)
    log.info(headline(rows))
    settings = [AttackSetting(n, args.eps, args.step_size, args.restarts) for n in args.pgd_steps]
    rows += attack_rows(model, test, settings, seed=args.seed, batch_size=args.attack_batch_size, log=log.info)
    run = summary.get("run", {})
    identity = {"run_id": str(args.checkpoint), "role": run.get("role", "model"), "dataset": args.dataset,
                "method": summary.get("method"), "cell": run.get("cell") or run.get("kind"),
                "params": json.dumps(summary.get("params", {}), sort_keys=True),
                "label_corruption": (run.get("label_corruption") or {}).get("rate", 0.0), "seed": run.get("seed"),
                "teacher_seed": run.get("teacher_seed")}
    recorded = summary.get("settings")  # what the model was trained with (workflow models record it)
    write_rows(finish_rows(rows, identity, provenance(recorded, device)), args.out, settings=recorded)
    log.info(f"{len(rows)} rows written to {args.out} in {time.perf_counter() - t0:.1f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m noisekd", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="evaluate a trained checkpoint and write tidy parquet rows")
    ev.add_argument("checkpoint", type=Path)
    ev.add_argument("--dataset", required=True, choices=("digits", "cifar10", "svhn"))
    ev.add_argument("--out", required=True, type=Path)
    ev.add_argument("--data-dir", default="data", help="raw downloads (cifar10, svhn, cinic10, cifar10c)")
    ev.add_argument("--size", type=int, default=None,
                    help="digits image size (default: the checkpoint's training size; must match it)")
    ev.add_argument("--split-seed", type=int, default=0, help="digits train/test split seed")
    ev.add_argument("--ood-per-class", type=int, default=60, help="printed digits / CINIC images per class")
    ev.add_argument("--no-ood", action="store_true")
    ev.add_argument("--corruptions", choices=("generate", "released", "none"), default="generate")
    paper = protocol_attack()  # defaults: the protocol's, config.yaml's evaluation.pgd
    ev.add_argument("--pgd-steps", type=int, nargs="*", default=[paper.steps], help="PGD step counts (none: no attack)")
    ev.add_argument("--eps", type=float, default=paper.eps)
    ev.add_argument("--step-size", type=float, default=paper.step_size)
    ev.add_argument("--restarts", type=int, default=paper.restarts)
    ev.add_argument("--attack-batch-size", type=int, default=ATTACK_BATCH_SIZE,
                    help="(sample, restart) rows per PGD pass")
    ev.add_argument("--seed", type=int, default=0, help="seed of corruptions and attack restarts")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    try:
        evaluate_command(args)
    except NoiseKDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
