"""One deterministic, resumable training loop for teachers and students.

SGD (momentum 0.9, weight decay 5e-4 -- the paper omits weight decay; 5e-4 is the value of the
codebases it follows, Zagoruyko's and Tung & Mori's), batch 128, lr 0.1 multiplied by 0.2 at the
milestones.  Every random draw (permutation, crop, flip, input noise, label re-draw, logit noise,
dropout) comes from one seeded generator on the training device whose state is checkpointed, so a
resumed run ends bit-identical (CPU) to an uninterrupted one.

The training step does no host synchronisation: loss and accuracy accumulate on the device and a
non-finite loss is recorded as a device-side step index that is checked every `check_every` steps.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import losses
from .data import DeviceSampler, ImageData, random_relabel, to_float
from .errors import NoiseKDError
from .io import load_torch, save_torch_atomic
from .methods import Method, MethodParams
from .models import WideResNet, dropout_drawn_ahead, fold_batchnorm
from .settings import RESUMABLE_SPEED_KEYS, Augmentation, TrainConfig, WRNSpec, augmentation_variants

CHECKPOINT_VERSION = 1


# ---------------------------------------------------------------------------------------------
# Loss terms: name -> function of the step context and the parameters


@dataclass
class StepContext:
    student_logits: torch.Tensor
    targets: torch.Tensor
    teacher_logits: torch.Tensor | None = None
    student_features: object = None
    teacher_features: object = None


TERMS: dict[str, Callable[[StepContext, MethodParams], torch.Tensor]] = {
    "ce": lambda c, p: losses.cross_entropy(c.student_logits, c.targets),
    "kd": lambda c, p: losses.hinton_kd(c.student_logits, c.teacher_logits, p.tau),
    "logit_l2": lambda c, p: losses.logit_l2(c.student_logits, c.teacher_logits),
    "at": lambda c, p: losses.attention_transfer(c.student_features.groups, c.teacher_features.groups),
    "sp": lambda c, p: losses.similarity_preserving(c.student_features.last, c.teacher_features.last),
    "rkd_d": lambda c, p: losses.rkd_distance(c.student_features.embedding, c.teacher_features.embedding),
    "rkd_a": lambda c, p: losses.rkd_angle(c.student_features.embedding, c.teacher_features.embedding),
    "fm": lambda c, p: losses.feature_mimicry(c.student_features.embedding, c.teacher_features.embedding),
}
FEATURE_TERMS = {"at", "sp", "rkd_d", "rkd_a", "fm"}
TEACHER_TERMS = {"kd", "logit_l2"} | FEATURE_TERMS


def perturb_logits(logits: torch.Tensor, sigma: float, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Noisy Teacher (Sau & Balasubramanian, 2016): z' = z * (1 + xi), xi ~ N(0, sigma^2) drawn per
    logit, applied to each sample with probability `rate` (their alpha); other samples keep z."""
    b = logits.shape[0]
    chosen = torch.rand(b, 1, device=logits.device, generator=generator) < rate
    xi = torch.randn(logits.shape, device=logits.device, generator=generator) * sigma
    return torch.where(chosen, logits * (1.0 + xi), logits)


def set_teacher_mode(teacher: WideResNet, fickle: bool) -> None:
    """BatchNorm always in eval mode (frozen statistics); dropout active only for Fickle Teacher."""
    teacher.eval()
    for module in teacher.dropout_modules():
        module.train(fickle)
    for p in teacher.parameters():
        p.requires_grad_(False)


def _side_stream(stream: torch.cuda.Stream | None):
    """Run a block on `stream` after all work queued so far on the current stream (CUDA), or inline."""
    if stream is None:
        return contextlib.nullcontext()
    stream.wait_stream(torch.cuda.current_stream())
    return torch.cuda.stream(stream)


def distillation_loss(
    method: Method,
    params: MethodParams,
    student: WideResNet,
    teacher: WideResNet | None,
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    generator: torch.Generator,
    teacher_stream: torch.cuda.Stream | None = None,
    teacher_logits: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The one training objective: (loss, student logits) for a batch of float images in [0, 1].

    Draw order from `generator` (fixed, for determinism): targets, input noise, the teacher's dropout
    masks, logit noise, the student's dropout masks (masks drawn ahead of each forward, all at once,
    where `fit` armed the network, else by each dropout layer during the forward).

    With a `teacher_stream` (CUDA), the teacher's forward runs on it, side by side with the student's
    forward, and joins before the loss.  Random draws are reserved in launch order on the host, so the
    numbers are those of the sequential step.

    `teacher_logits`, the teacher's logits of these very images looked up in a precomputed table
    (`noisekd.teacher_logits`), stand in for the teacher's forward: no random draw changes.
    """
    terms = method.terms(params)
    targets = random_relabel(labels, params.mc_rate, num_classes, generator) if method.relabel else labels
    student_input = images
    if method.student_input == "gaussian":
        noise = torch.randn(images.shape, device=images.device, generator=generator)
        student_input = images + params.sigma * noise
        if params.clip_noisy_input:
            student_input = student_input.clamp(0.0, 1.0)
    want_features = bool(FEATURE_TERMS & terms.keys())
    ctx = StepContext(student_logits=None, targets=targets)  # type: ignore[arg-type]
    if TEACHER_TERMS & terms.keys():
        if teacher_logits is not None and want_features:
            raise NoiseKDError(f"method {method.name} needs the teacher's features, not only its logits")
        if teacher_logits is None and teacher is None:
            raise NoiseKDError(f"method {method.name} needs a teacher")
        with _side_stream(teacher_stream), torch.no_grad():
            if teacher_logits is not None:
                ctx.teacher_logits = teacher_logits
            else:
                teacher.draw_dropout()
                out = teacher(images, features=want_features)
                ctx.teacher_logits, ctx.teacher_features = out if want_features else (out, None)
            if method.perturb_teacher_logits:
                ctx.teacher_logits = perturb_logits(ctx.teacher_logits, params.nt_sigma, params.nt_rate, generator)
    student.draw_dropout()
    out = student(student_input, features=want_features)
    ctx.student_logits, ctx.student_features = out if want_features else (out, None)
    if teacher_stream is not None:
        # Join.  Every step forks after all earlier work and joins before the loss, so tensors that
        # cross the two streams are never reused by one while the other may still read them.
        torch.cuda.current_stream().wait_stream(teacher_stream)
    loss = sum(weight * TERMS[name](ctx, params) for name, weight in terms.items())
    return loss, ctx.student_logits


# ---------------------------------------------------------------------------------------------
# Models and checkpoints


# Module initialisation draws from the global CPU generator; seeds trained side by side in threads
# build their models at the same time, so seeding and drawing must not interleave.
_INIT_LOCK = threading.Lock()


def build_model(spec: WRNSpec, seed: int) -> WideResNet:
    """Initialise on the CPU from `seed` without touching the caller's global RNG state."""
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return WideResNet(spec)


def save_model(path: str | Path, model: WideResNet, **extra) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_torch_atomic(path, {"format": "noisekd-model", "spec": asdict(model.spec), "state_dict": state, **extra})


def _spec_from(obj: dict, path) -> WRNSpec:
    try:
        d = dict(obj["spec"])
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return WRNSpec(**d)
    except (KeyError, TypeError) as exc:
        raise NoiseKDError(f"checkpoint {path} has no valid model spec ({exc})") from None


def load_model(path: str | Path, expected: WRNSpec | None = None, device: str | torch.device = "cpu") -> WideResNet:
    """Load a saved model with weights_only=True; refuse one of another architecture."""
    obj = load_torch(path)
    if not isinstance(obj, dict) or "state_dict" not in obj:
        raise NoiseKDError(f"checkpoint {path} is not a noisekd model file")
    spec = _spec_from(obj, path)
    if expected is not None and not spec.same_architecture(expected):
        raise NoiseKDError(f"checkpoint {path} holds {spec.name} ({spec}), expected {expected.name} ({expected})")
    model = WideResNet(spec)
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as exc:
        raise NoiseKDError(f"checkpoint {path} does not fit {spec.name}: {str(exc).splitlines()[0]}") from None
    return model.to(device)


def model_summary(path: str | Path) -> dict:
    """The run summary that `save_model` stored with a model (its settings, seed and history)."""
    obj = load_torch(path)
    try:
        return json.loads(obj.get("summary") or "{}") if isinstance(obj, dict) else {}
    except ValueError:
        raise NoiseKDError(f"checkpoint {path} has an unreadable summary") from None


def inference_model(model: WideResNet) -> WideResNet:
    """The fastest equivalent of a trained model for evaluation and attacks: BatchNorm folded and,
    on CUDA, channels_last weights (inputs stay NCHW; cuDNN takes either)."""
    folded = fold_batchnorm(model)
    if next(folded.parameters()).device.type == "cuda":
        folded = folded.to(memory_format=torch.channels_last)
    return folded


class TrainingInterrupted(Exception):
    """Raised after SIGTERM/SIGINT once a checkpoint has been saved; the caller exits non-zero."""


# Set by the main thread's handler on SIGTERM/SIGINT; every fit of the process (also those running
# side by side in threads, which cannot install handlers) checks it between steps.
SIGNALLED: dict = {}
_SIGNAL_SCOPE = {"depth": 0}


@contextlib.contextmanager
def stop_on_signals():
    """Turn SIGTERM (SLURM time limit / preemption) and SIGINT into `SIGNALLED` while the block runs.

    Only the main thread can install handlers; elsewhere this does nothing (the main thread's
    handlers, installed around the threads, serve every fit)."""
    if threading.current_thread() is not threading.main_thread() or _SIGNAL_SCOPE["depth"]:
        # Another thread, or nested in an outer scope (runs one after another): the outer handlers
        # and flag serve, so a signal that arrives between two runs is not forgotten.
        yield
        return
    SIGNALLED.clear()
    previous = {}

    def handler(signum, _frame):
        SIGNALLED["signal"] = signum

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)
    _SIGNAL_SCOPE["depth"] = 1
    try:
        yield
    finally:
        _SIGNAL_SCOPE["depth"] = 0
        for sig, old in previous.items():
            signal.signal(sig, old)


def stream_seed(seed: int, draws: str) -> int:
    """The generator seed of `seed` in the stream `draws` ("" -> the seed itself)."""
    if not draws:
        return int(seed)
    return int.from_bytes(hashlib.sha256(f"{draws}/{int(seed)}".encode()).digest()[:8], "little") >> 1


def fingerprint(*tensors: torch.Tensor) -> str:
    """A short hash of tensors' sizes, dtypes and bytes (a checkpoint's inputs)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous().reshape(-1)  # flat: 0-d tensors cannot be viewed as bytes
        h.update(f"{t.numel()}{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: oneDNN then runs bf16 convolutions natively (else it emulates them, slowly)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f" {flag}" in flags for flag in ("avx512_bf16", "amx_bf16"))


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" -> "bf16" where the device computes it natively, else "fp32"."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


def resolve_numerics(config: TrainConfig, device: torch.device) -> tuple[str, bool]:
    """(precision, channels_last) of a run: NHWC where it pays (CUDA, and a CPU computing in bf16)."""
    precision = resolve_precision(config.precision, device)
    return precision, config.channels_last and (device.type == "cuda" or precision == "bf16")


# ---------------------------------------------------------------------------------------------
# The loop


@dataclass
class TrainResult:
    summary: dict
    model: WideResNet = field(repr=False)


def fit(
    student: WideResNet,
    train_data: ImageData,
    config: TrainConfig,
    method: Method,
    params: MethodParams = MethodParams(),
    teacher: WideResNet | None = None,
    augmentation: Augmentation | None = Augmentation(),
    checkpoint_path: str | Path | None = None,
    device: str | torch.device | None = "auto",
    log: Callable[[str], None] = print,
    run_info: dict | None = None,
    teacher_logits: torch.Tensor | None = None,
    draws: str = "",
) -> TrainResult:
    """Train `student` in place with `method`; resume from `checkpoint_path` if it exists.

    `draws` names the run's stream of random draws (order, crops, flips, noise, labels, dropout): the
    generator is seeded with (seed, draws), so the workflow's teacher and student of one seed number
    ("teacher", "student") draw independently; "" seeds it with the seed alone.

    `teacher_logits` (N, V, K), the teacher's logits of every training image under every
    augmentation variant (`noisekd.teacher_logits`), replace the teacher's forward where the method
    allows it (`Method.cacheable`); `teacher` is then not needed.

    Returns the trained model and a JSON-able summary.  Raises NoiseKDError on a non-finite loss
    (naming epoch and step) and TrainingInterrupted after SIGTERM (checkpoint saved first).
    """
    device = resolve_device(device)
    method.check(params)
    if method.teacher and teacher is None and teacher_logits is None:
        raise NoiseKDError(f"method {method.name} needs a teacher checkpoint")
    if teacher_logits is not None:
        if not method.cacheable(params):
            raise NoiseKDError(f"method {method.name} cannot use cached teacher logits (its teacher gives features "
                               "or keeps dropout active)")
        expected = (len(train_data), augmentation_variants(augmentation), train_data.num_classes)
        if tuple(teacher_logits.shape) != expected:
            raise NoiseKDError(f"teacher logits have shape {tuple(teacher_logits.shape)}, this run needs {expected}")
        teacher = None
    if teacher is not None and "fm" in method.terms(params) and teacher.embedding_dim != student.embedding_dim:
        raise NoiseKDError(
            f"method {method.name} matches embeddings, but teacher {teacher.spec.name} has embedding width "
            f"{teacher.embedding_dim} and student {student.spec.name} has {student.embedding_dim}"
        )
    num_classes = train_data.num_classes
    if student.spec.num_classes != num_classes:
        raise NoiseKDError(f"student has {student.spec.num_classes} outputs, data has {num_classes} classes")

    precision, channels_last = resolve_numerics(config, device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    student = student.to(device, memory_format=memory_format)
    if teacher is not None:
        # The frozen teacher only ever runs in eval mode: an inference copy with BatchNorm folded.
        # A copy: runs side by side may share the caller's teacher, which must not change under them.
        teacher = fold_batchnorm(teacher).to(device, memory_format=memory_format)
        set_teacher_mode(teacher, fickle=method.fickle_teacher)
    data = train_data.to(device)
    if teacher_logits is not None:
        teacher_logits = teacher_logits.to(device)

    generator = torch.Generator(device=device).manual_seed(stream_seed(config.seed, draws))
    optimizer = torch.optim.SGD(
        student.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        **({"fused": True} if device.type == "cuda" else {}),
    )
    sampler = DeviceSampler(data, config.batch_size, generator, augmentation)

    start_epoch, start_step, perm = 0, 0, None
    # Running sums live on the device; the step never waits for the host.
    acc_loss = torch.zeros((), device=device, dtype=torch.float64)
    acc_correct = torch.zeros((), device=device, dtype=torch.int64)
    bad_step = torch.full((), -1, device=device, dtype=torch.int64)
    history: list[dict] = []
    # precision as resolved: a retry on a node whose CPU resolves `auto` otherwise must not resume the run
    run_config = {**{k: v for k, v in asdict(config).items() if k not in RESUMABLE_SPEED_KEYS}, "precision": precision}
    identity = {"method": method.name, "params": asdict(params), "config": run_config, "spec": asdict(student.spec),
                "draws": draws, "augmentation": asdict(augmentation) if augmentation is not None else None,
                # the inputs themselves: a rerun after the data, labels or teacher changed starts over
                "data": fingerprint(train_data.images, train_data.labels),
                "teacher": fingerprint(*teacher.state_dict().values()) if teacher is not None else None}
    if teacher_logits is not None:
        identity["teacher_logits"] = fingerprint(teacher_logits)  # other rounding than live: never switch midway

    if checkpoint_path is not None:
        # A process killed inside atomic_path leaves its temporary file behind: never complete, drop it.
        for stale in Path(checkpoint_path).parent.glob(f".{Path(checkpoint_path).name}.*.tmp"):
            stale.unlink(missing_ok=True)
    if checkpoint_path is not None and Path(checkpoint_path).exists():
        state = load_torch(checkpoint_path, map_location=device)
        if state.get("identity") != json.loads(json.dumps(identity)):
            raise NoiseKDError(
                f"checkpoint {checkpoint_path} belongs to a different run (method/params/config/architecture differ); "
                "delete it to start over"
            )
        student.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"].cpu())
        start_epoch, start_step = state["epoch"], state["step"]
        perm = state["perm"].to(device) if state["perm"] is not None else None
        acc_loss.fill_(state["acc_loss"])
        acc_correct.fill_(state["acc_correct"])
        history = list(state["history"])
        log(f"resumed from {checkpoint_path} at epoch {start_epoch + 1}, step {start_step}")

    def save_checkpoint(epoch: int, step: int, perm: torch.Tensor | None) -> None:
        if checkpoint_path is None:
            return
        save_torch_atomic(
            checkpoint_path,
            {
                "version": CHECKPOINT_VERSION,
                "identity": json.loads(json.dumps(identity)),
                "model": {k: v.detach().cpu() for k, v in student.state_dict().items()},
                "optimizer": _to_cpu(optimizer.state_dict()),
                "generator": generator.get_state().cpu(),
                "epoch": epoch,
                "step": step,
                "perm": perm.cpu() if perm is not None else None,
                "acc_loss": float(acc_loss),
                "acc_correct": int(acc_correct),
                "history": history,
            },
        )

    # Compiled forwards are used inside this loop only; the returned model stays a plain module.
    # Dropout masks are drawn ahead of each forward (`dropout_drawn_ahead` below), so dropout
    # networks compile whole too.
    student_fn, teacher_fn = student, teacher
    compiled = config.compile and device.type == "cuda"
    if compiled:
        student_fn = torch.compile(student, dynamic=False)
        if teacher is not None:
            teacher_fn = torch.compile(teacher, dynamic=False)

    teacher_stream = (
        torch.cuda.Stream(device=device) if device.type == "cuda" and teacher is not None and config.teacher_stream
        else None
    )

    def autocast():
        # No autocast weight cache: it would be stale inside a replayed graph (and buys nothing here).
        if precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
        return contextlib.nullcontext()

    def train_step(idx: torch.Tensor, step) -> None:
        """One optimisation step on the samples `idx`, augmented; `step` (int or device tensor) is only
        recorded if the loss turns non-finite.  Touches tensors only: safe to capture in a CUDA graph."""
        images, labels, variant = sampler.gather(idx)
        x = to_float(images)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        cached = teacher_logits[idx, variant] if teacher_logits is not None else None
        with autocast():
            loss, logits = distillation_loss(method, params, student_fn, teacher_fn, x, labels, num_classes, generator,
                                             teacher_stream, cached)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        detached = loss.detach()
        bad_step.copy_(torch.where((bad_step < 0) & ~torch.isfinite(detached), step, bad_step))
        acc_loss.add_(detached.double() * labels.shape[0])
        acc_correct.add_((logits.detach().argmax(1) == labels).sum())

    graphed = (
        GraphedStep(train_step, config.batch_size, generator)
        if device.type == "cuda" and config.cuda_graphs
        else None
    )

    flag = SIGNALLED
    last_saved = time.monotonic()
    steps_per_epoch = len(sampler)
    n = len(data)
    log(
        f"training {student.spec.name} with {method.name} on {n} images, {config.epochs} epochs, "
        f"{steps_per_epoch} steps/epoch, device {device}, {precision}"
        f"{', CUDA graphs' if graphed else ''}{', compiled' if compiled else ''}"
        f"{', cached teacher logits' if teacher_logits is not None else ''}, seed {config.seed}"
    )
    nets = [net for net in (student, teacher) if net is not None]
    image_size = tuple(data.images.shape[-2:])  # crops keep the size
    with stop_on_signals(), dropout_drawn_ahead(nets, config.batch_size, image_size, generator, channels_last):
        for epoch in range(start_epoch, config.epochs):
            lr = config.lr_at(epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            student.train()
            if perm is None:
                perm = sampler.permutation()
                acc_loss.zero_()
                acc_correct.zero_()
            t0 = time.perf_counter()
            images_seen = 0
            for step in range(start_step, steps_per_epoch):
                idx = sampler.indices(perm, step)
                if graphed is not None and graphed.ready(len(idx), lr):
                    graphed.replay(idx, step)
                elif graphed is not None:
                    with CAPTURE_LOCK:  # may compile, which must not overlap another thread's capture
                        train_step(idx, step)
                    graphed.eager_steps += 1
                else:
                    train_step(idx, step)
                images_seen += len(idx)
                last = step == steps_per_epoch - 1
                if (step + 1) % config.check_every == 0 or last or flag:
                    _raise_if_bad(bad_step, epoch)
                if flag and not last:
                    save_checkpoint(epoch, step + 1, perm)
                    log(f"signal {flag['signal']}: checkpoint saved at epoch {epoch + 1}, step {step + 1}")
                    raise TrainingInterrupted(f"interrupted by signal {flag['signal']} at epoch {epoch + 1}")
            elapsed = time.perf_counter() - t0
            record = {
                "epoch": epoch + 1,
                "loss": float(acc_loss) / n,
                "train_acc": float(acc_correct) / n,
                "lr": lr,
                "images_per_s": images_seen / max(elapsed, 1e-9),
            }
            history.append(record)
            log(
                f"epoch {epoch + 1:>4}/{config.epochs}  loss {record['loss']:.4f}  "
                f"train_acc {100 * record['train_acc']:6.2f}%  lr {lr:.5f}  {record['images_per_s']:9.1f} img/s"
            )
            perm, start_step = None, 0
            due = (epoch + 1) % config.checkpoint_every == 0 and (
                time.monotonic() - last_saved >= config.checkpoint_interval_s)
            if due or epoch + 1 == config.epochs or flag:
                save_checkpoint(epoch + 1, 0, None)
                last_saved = time.monotonic()
            if flag and epoch + 1 < config.epochs:
                log(f"signal {flag['signal']}: checkpoint saved after epoch {epoch + 1}")
                raise TrainingInterrupted(f"interrupted by signal {flag['signal']} after epoch {epoch + 1}")

    summary = {
        **identity,
        "run": run_info or {},
        "epochs_done": config.epochs,
        "image_size": list(train_data.images.shape[-2:]),  # evaluation outside the workflow checks it
        "final_loss": history[-1]["loss"] if history else None,
        "final_train_acc": history[-1]["train_acc"] if history else None,
        "history": history,
        "device": str(device),
        "precision": precision,
        "channels_last": channels_last,
        "cuda_graphs": graphed.stats() if graphed is not None else None,
        "compiled": compiled,
        "teacher_logits": "cached" if teacher_logits is not None else None,
        "torch": torch.__version__,
    }
    return TrainResult(summary=summary, model=student)


def run_side_by_side(tasks: list[Callable[[], None]], device: torch.device) -> None:
    """Run training tasks (each calling `fit`) at the same time on one GPU: each in its own thread on
    its own CUDA stream, so the kernels of different runs overlap (one small run leaves most of an
    H100 idle: two compiled KD runs side by side train 1.31x faster than alone, see README,
    Performance).  On a CPU they run one after another.  SIGTERM/SIGINT stop every run at its next
    step with a checkpoint; the first error is raised once all runs have ended."""
    if device.type != "cuda" or len(tasks) < 2:
        with stop_on_signals():
            for task in tasks:
                task()
        return
    errors: list[BaseException | None] = [None] * len(tasks)

    def work(i: int) -> None:
        try:
            stream = torch.cuda.Stream(device=device)
            with torch.cuda.stream(stream):
                tasks[i]()
            stream.synchronize()
        except BaseException as exc:  # re-raised in the calling thread below
            errors[i] = exc

    threads = [threading.Thread(target=work, args=(i,), name=f"run{i}") for i in range(len(tasks))]
    with stop_on_signals():
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for exc in errors:
        if exc is not None:
            raise exc


# Held while a thread captures a CUDA graph or runs an eager (possibly compiling) step of a graphed run.
CAPTURE_LOCK = threading.Lock()


class GraphedStep:
    """Replays a full-batch training step as one CUDA graph.

    `body(idx, step)` is the eager step on the batch indices `idx`; it is captured once per learning
    rate (the fused SGD kernel takes lr as a constant) after at least one eager step has created the
    optimizer's momentum buffers.  Static inputs are copied in before each replay.  The run's generator
    is registered with the graph, so every replay draws fresh crops, flips, noise and dropout masks and
    advances the generator exactly as the eager step would: replayed and eager steps are interchangeable.
    """

    def __init__(self, body: Callable[[torch.Tensor, torch.Tensor], None], batch_size: int,
                 generator: torch.Generator):
        device = generator.device
        self.body, self.batch_size, self.generator = body, batch_size, generator
        self.idx = torch.zeros(batch_size, dtype=torch.int64, device=device)
        self.step = torch.zeros((), dtype=torch.int64, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.lr: float | None = None
        self.eager_steps = 0
        self.replays = 0
        self.captures = 0
        self.capture_moved_generator = False
        self.capture_stream: torch.cuda.Stream | None = None

    def ready(self, batch: int, lr: float) -> bool:
        """Whether this step can be replayed (capturing first if the lr changed); the first step and
        partial batches run eagerly."""
        if batch != self.batch_size or self.eager_steps == 0:
            return False
        if self.graph is None or lr != self.lr:
            self._capture(lr)
        return True

    def _capture(self, lr: float) -> None:
        self.graph = None  # free the previous graph's memory pool first
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(self.generator)
        before = self.generator.get_state()
        # Own capture stream and thread-local capture mode: runs in other threads (several runs
        # sharing one GPU) may replay at the same time.  A capture also marks the default CUDA
        # generator as captured, so no other thread may compile (which draws from it) meanwhile.
        if self.capture_stream is None:
            self.capture_stream = torch.cuda.Stream(device=self.idx.device)
        with CAPTURE_LOCK, torch.cuda.graph(graph, stream=self.capture_stream, capture_error_mode="thread_local"):
            self.body(self.idx, self.step)
        if not torch.equal(before, self.generator.get_state()):
            # Capturing executes nothing, so it must not consume draws: the next replay starts where
            # the last eager step left the generator.
            self.generator.set_state(before)
            self.capture_moved_generator = True
        self.graph, self.lr = graph, lr
        self.captures += 1

    def replay(self, idx: torch.Tensor, step: int) -> None:
        self.idx.copy_(idx)
        self.step.fill_(step)
        self.graph.replay()
        self.replays += 1

    def stats(self) -> dict:
        return {"captures": self.captures, "replays": self.replays, "eager_steps": self.eager_steps,
                "capture_moved_generator": self.capture_moved_generator}


def _raise_if_bad(bad_step: torch.Tensor, epoch: int) -> None:
    step = int(bad_step)  # the only host sync, every check_every steps
    if step >= 0:
        raise NoiseKDError(
            f"non-finite loss at epoch {epoch + 1}, step {step + 1}; stopped without checkpointing this epoch"
        )


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj
