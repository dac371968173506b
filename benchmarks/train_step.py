"""Training throughput of noisekd's loop against the loop public KD codebases write, side by side.

    python -m benchmarks.train_step --device {cpu,cuda} [--quick] [--ablation]

Seven steps (`ROLES`), each timed through `noisekd.train.fit` (the code the workflow runs) on the same
synthetic CIFAR-sized uint8 data (seeded, class-dependent, so the loss is a real one): the teacher step
(WRN-40-2, cross-entropy), the same with dropout 0.3 (`teacher_dropout`, as the Fickle Teacher teachers
train), the student step (WRN-16-2), the KD step (WRN-40-2 -> WRN-16-2, Hinton KD), the Fickle Teacher
step (`kd_fickle`: dropout 0.4 kept active in the teacher) and the KD step as the workflow runs it for
Hinton/SR/MC/Noisy Teacher students (`kd_cached`: the teacher's logits looked up in its table of every
image x crop/flip, `noisekd.teacher_logits`) and the feature methods' step (`kd_features`: RKD-DA +
Hinton, the teacher live for its features).  Building that table is
timed too (`teacher_table`: images x variants per second, on the first `--table-n` images; the table
is tiled to N rows for the timed fit, which costs the same per step as the real one).  `fit` runs
two epochs (`--epochs`) over N images; the first warms up (allocator, cuDNN, CUDA-graph capture,
compilation), the others are the figure (`fit` times each epoch itself, ending on a device sync).

The reference is the KD step as public KD codebases run it, in the same process on the same images: a
torchvision-style dataset of HWC uint8 arrays turned into PIL images and augmented per sample
(RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize) in DataLoader workers, fp32,
eager, contiguous NCHW, foreach SGD, and `.item()` on the loss and accuracy every step.  It also runs
one warm-up epoch and one timed epoch (DataLoader start-up included, as in every epoch of such code).

Prints one JSON line (and writes it under results/benchmarks/): images/s of every step,
`speedup_vs_reference` (KD step over the reference KD step), the evaluation forward's images/s, the
KD epoch time projected to 50 000
images, its FLOPs (counted by torch's FlopCounterMode) and the achieved fraction of the device's
measured bf16 matrix peak.  `--ablation` also times the KD step with each speed setting switched off
(CUDA graphs, the teacher's side stream, bf16, channels_last) and with torch.compile or cuDNN
autotuning on.  `--quick` (CPU: < 1 minute) uses few
images and skips the ablation.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import DEFAULT_OUT_DIR, context, emit, sync
from noisekd import teacher_logits
from noisekd.data import ImageData
from noisekd.execution import resolve_numerics, resolve_precision
from noisekd.methods import MethodParams, get_method
from noisekd.models import WRNSpec, build_model
from noisekd.settings import Augmentation, TrainConfig, augmentation_variants
from noisekd.train import fit

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
EPOCH_IMAGES = 50_000  # one CIFAR-10 training epoch
TEACHER, STUDENT = (40, 2), (16, 2)


def synthetic_cifar(n: int, seed: int = 0) -> ImageData:
    """uint8 (n, 3, 32, 32) images whose mean colour depends on the label, plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    base = torch.rand(10, 3, 1, 1, generator=g) * 160
    noise = torch.rand(n, 3, 32, 32, generator=g) * 95
    images = (base[labels] + noise).to(torch.uint8)
    return ImageData(images, labels, tuple(str(i) for i in range(10)))


def _spec(depth_width, dropout=0.0, normalise=True) -> WRNSpec:
    mean, std = (CIFAR_MEAN, CIFAR_STD) if normalise else ((0.0,) * 3, (1.0,) * 3)
    return WRNSpec(depth_width[0], depth_width[1], 10, dropout, 3, mean, std)


def teacher_table(data: ImageData, device: torch.device, config: TrainConfig, table_n: int) -> tuple[torch.Tensor, dict]:
    """The KD teacher's logits table for `data` (tiled from its first `table_n` images) and the
    build rate of that part, images x variants per second."""
    teacher = build_model(_spec(TEACHER), 1).to(device)
    part = ImageData(data.images[:table_n], data.labels[:table_n], data.classes).to(device)
    precision, channels_last = resolve_numerics(config, device)
    teacher_logits.compute(teacher, ImageData(part.images[:8], part.labels[:8], data.classes), Augmentation(),
                           precision, channels_last, log=lambda line: None)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    table = teacher_logits.compute(teacher, part, Augmentation(), precision, channels_last, log=lambda line: None)
    sync(device)
    elapsed = time.perf_counter() - t0
    variants = augmentation_variants(Augmentation())
    rate = {"images_per_s": round(len(part) * variants / elapsed, 1), "images": len(part), "variants": variants,
            "seconds": round(elapsed, 3), "precision": precision}
    reps = -(-len(data) // len(part))
    return table.repeat(reps, 1, 1)[: len(data)], rate


# role -> (method, its parameters, the trained network and its dropout); kd_cached looks its teacher up
ROLES = {
    "teacher": ("baseline", MethodParams(), TEACHER, 0.0),
    "teacher_dropout": ("baseline", MethodParams(), TEACHER, 0.3),
    "student": ("baseline", MethodParams(), STUDENT, 0.0),
    "kd": ("hinton", MethodParams(), STUDENT, 0.0),
    "kd_fickle": ("ft", MethodParams(dropout=0.4), STUDENT, 0.0),
    "kd_cached": ("hinton", MethodParams(), STUDENT, 0.0),
    # The feature methods' step (AT, SP, RKD, feature mimicry: the teacher runs live for its features);
    # RKD-DA + Hinton, whose distance and angle losses over the batch cost the most of them.
    "kd_features": ("rkd_da+hinton", MethodParams(), STUDENT, 0.0),
}


def time_fit(data: ImageData, role: str, device: torch.device, batch_size: int, epochs: int = 2,
             table_n: int | None = None, **overrides) -> dict:
    """images/s of `fit` for one of the `ROLES` over the epochs after the first."""
    config = TrainConfig(epochs=epochs, milestones=(), batch_size=batch_size, seed=0, **overrides)
    method_name, params, network, dropout = ROLES[role]
    method = get_method(method_name)
    live_teacher = method.teacher and role != "kd_cached"
    teacher = build_model(_spec(TEACHER, params.dropout), 1) if live_teacher else None
    table, table_rate = teacher_table(data, device, config, table_n or len(data)) if role == "kd_cached" else (None, None)
    model = build_model(_spec(network, dropout), 0)
    t0 = time.perf_counter()
    result = fit(model, data, config, method, params, teacher=teacher, augmentation=Augmentation(),
                 device=device, log=lambda line: None, teacher_logits=table)
    total = time.perf_counter() - t0
    history = result.summary["history"]
    timed_s = sum(len(data) / h["images_per_s"] for h in history[1:])
    return {
        "images_per_s": round(len(data) * (epochs - 1) / timed_s, 1),
        "first_epoch_s": round(len(data) / history[0]["images_per_s"], 3),
        "total_s": round(total, 3),
        "precision": result.summary["precision"],
        "compiled": result.summary["compiled"],
        "cuda_graphs": result.summary["cuda_graphs"],
        "final_loss": round(history[-1]["loss"], 4),
        **({"teacher_table": table_rate} if table_rate else {}),
    }


# ---------------------------------------------------------------------------------------------
# The reference-style loop


class PILDataset(torch.utils.data.Dataset):
    """A torchvision CIFAR10-style dataset: HWC uint8 arrays, PIL conversion and transforms per sample."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images_hwc, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def reference_kd(data: ImageData, device: torch.device, batch_size: int, workers: int, params=MethodParams()) -> dict:
    """The KD step as public codebases write it; images/s of the second of two epochs."""
    from torchvision import transforms

    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(CIFAR_MEAN, CIFAR_STD),
    ])
    dataset = PILDataset(data.images.permute(0, 2, 3, 1).numpy(), data.labels.numpy(), transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         pin_memory=device.type == "cuda",
                                         generator=torch.Generator().manual_seed(0))
    teacher = build_model(_spec(TEACHER, normalise=False), 1).to(device).eval()
    student = build_model(_spec(STUDENT, normalise=False), 0).to(device).train()
    for p in teacher.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    kl = torch.nn.KLDivLoss(reduction="batchmean")
    times = []
    for _epoch in range(2):
        sync(device)
        t0 = time.perf_counter()
        seen, running, correct = 0, 0.0, 0
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.no_grad():
                t_logits = teacher(x)
            s_logits = student(x)
            loss = (1 - params.alpha) * F.cross_entropy(s_logits, y) + params.alpha * params.tau**2 * kl(
                F.log_softmax(s_logits / params.tau, 1), F.softmax(t_logits / params.tau, 1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running += loss.item() * len(y)  # the per-step host sync of such loops
            correct += (s_logits.argmax(1) == y).sum().item()
            seen += len(y)
        sync(device)
        times.append(time.perf_counter() - t0)
    return {"images_per_s": round(len(data) / times[1], 1), "workers": workers, "final_loss": round(running / seen, 4)}


# ---------------------------------------------------------------------------------------------
# FLOPs and the device's peak


def kd_step_flops(batch_size: int, counted_batch: int = 4) -> int:
    """FLOPs of one KD step (teacher forward, student forward and backward), counted by torch's
    FlopCounterMode on a small batch and scaled (every counted op is linear in the batch)."""
    from torch.utils.flop_counter import FlopCounterMode

    teacher, student = build_model(_spec(TEACHER), 1).eval(), build_model(_spec(STUDENT), 0).train()
    x = torch.rand(counted_batch, 3, 32, 32)
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            teacher(x)
        student(x).sum().backward()
    return int(counter.get_total_flops()) * batch_size // counted_batch


def matmul_peak_tflops(device: torch.device, n: int = 8192) -> float | None:
    """Measured bf16 matrix-product rate (random operands), the ceiling the issue's floor refers to."""
    if device.type != "cuda":
        return None
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        a @ b
    end.record()
    end.synchronize()
    return round(2 * n**3 * 10 / (start.elapsed_time(end) / 1e3) / 1e12, 1)


def inference_rate(data: ImageData, device: torch.device, batch_size: int = 1000) -> float:
    """images/s of the evaluation forward (student, inference copy, fp32) over the data, after a warm-up."""
    from noisekd.checkpoints import inference_model
    from noisekd.evaluate import predict

    model = inference_model(build_model(_spec(STUDENT), 0).to(device))
    images = data.images.to(device)
    predict(model, images[: 2 * batch_size], batch_size)
    sync(device)
    t0 = time.perf_counter()
    predict(model, images, batch_size)
    sync(device)
    return round(len(images) / (time.perf_counter() - t0), 1)


# name -> (TrainConfig overrides, cuDNN autotuning on/off)
ABLATIONS = {
    "no_cuda_graphs": ({"cuda_graphs": False}, False),
    "no_teacher_stream": ({"teacher_stream": False}, False),
    "fp32": ({"precision": "fp32"}, False),
    "no_channels_last": ({"channels_last": False}, False),
    "cudnn_benchmark": ({}, True),
    "compile": ({"compile": True}, False),
    "no_compile": ({"compile": False}, False),
    "compile_cudnn_benchmark": ({"compile": True}, True),
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="few images, no ablation (CPU: under a minute)")
    parser.add_argument("--n", type=int, default=None, help="images per epoch (default: cuda 50000, cpu 1024, quick 256)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2, help="fit epochs per step kind; all but the first are timed")
    parser.add_argument("--workers", type=int, default=None, help="reference DataLoader workers (default min(8, cores))")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("--ablation", nargs="?", const="all", default=None,
                        help=f"also time the KD step with other speed settings: all or some of {','.join(ABLATIONS)}")
    parser.add_argument("--roles", default=",".join(ROLES), help=f"which fit steps to time (of {','.join(ROLES)})")
    parser.add_argument("--table-n", type=int, default=None,
                        help="images whose teacher-logits table is built and timed (default cuda 5000, cpu 16)")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference loop")
    parser.add_argument("--out-dir", default=str(DEFAULT_OUT_DIR), help="where the JSON record goes ('' = nowhere)")
    parser.add_argument("--compile", action="store_true", help="time every fit with train.compile on, as the "
                        "paper config runs on CUDA (the ablation's no_compile turns it off)")
    args = parser.parse_args(argv)

    unknown = set(args.roles.split(",")) - set(ROLES)
    if unknown:
        parser.error(f"--roles: unknown {', '.join(sorted(unknown))} (known: {', '.join(ROLES)})")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    settings = {"compile": args.compile}  # TrainConfig settings of every timed fit
    device = torch.device(args.device)
    n = args.n or (256 if args.quick else EPOCH_IMAGES if device.type == "cuda" else 1024)
    workers = args.workers if args.workers is not None else min(8, os.cpu_count() or 1)
    data = synthetic_cifar(n)
    record = {"benchmark": "train_step", **context(device), "n": n, "batch_size": args.batch_size,
              "quick": args.quick, "teacher": "WRN-40-2", "student": "WRN-16-2", "settings": settings}
    for role in args.roles.split(","):
        table_n = min(n, args.table_n or (5000 if device.type == "cuda" else 16))
        record[role] = time_fit(data, role, device, args.batch_size, args.epochs, table_n, **settings)
        print(f"# {role}: {record[role]}", flush=True)
    if not args.no_reference:
        record["reference_kd"] = reference_kd(data, device, args.batch_size, workers)
        print(f"# reference kd: {record['reference_kd']}", flush=True)
        if "kd" in record:
            record["speedup_vs_reference"] = round(
                record["kd"]["images_per_s"] / record["reference_kd"]["images_per_s"], 2)
        if "kd_cached" in record:
            record["speedup_vs_reference_cached_teacher"] = round(
                record["kd_cached"]["images_per_s"] / record["reference_kd"]["images_per_s"], 2)
    if args.ablation and not args.quick:
        record["ablation"] = {}
        for name in args.ablation.split(",") if args.ablation != "all" else ABLATIONS:
            overrides, autotune = ABLATIONS[name]
            torch.backends.cudnn.benchmark = autotune
            try:
                record["ablation"][name] = time_fit(data, "kd", device, args.batch_size, args.epochs, None,
                                                    **{**settings, **overrides})
            except Exception as exc:  # one failing variant must not hide the others' figures
                record["ablation"][name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
            finally:
                torch.backends.cudnn.benchmark = False
            print(f"# kd {name}: {record['ablation'][name]}", flush=True)
    if "kd" in record:
        flops = kd_step_flops(args.batch_size)
        steps = -(-EPOCH_IMAGES // args.batch_size)
        epoch_s = EPOCH_IMAGES / record["kd"]["images_per_s"]
        peak = matmul_peak_tflops(device)
        record.update(
            kd_step_gflop=round(flops / 1e9, 2),
            kd_epoch_tflop=round(flops * steps / 1e12, 2),
            kd_epoch_s=round(epoch_s, 3),
            kd_achieved_tflops=round(flops * steps / epoch_s / 1e12, 2),
            matmul_peak_tflops=peak,
        )
        if peak:
            record["kd_epoch_floor_s"] = round(flops * steps / (peak * 1e12), 3)
            record["kd_fraction_of_floor"] = round(record["kd_epoch_floor_s"] / epoch_s, 3)
    record["inference_images_per_s"] = inference_rate(data, device)
    record["precision_auto"] = resolve_precision("auto", device)
    return emit(record, args.out_dir or None)


if __name__ == "__main__":
    main()
