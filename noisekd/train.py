"""One deterministic, resumable training loop for teachers and students.

SGD (momentum 0.9, weight decay 5e-4 -- the paper omits weight decay; 5e-4 is the value of the
codebases it follows, Zagoruyko's and Tung & Mori's), batch 128, lr 0.1 multiplied by 0.2 at the
milestones.  Every random draw (permutation, crop, flip, input noise, label re-draw, logit noise,
dropout) comes from one seeded generator on the training device whose state is checkpointed, so a
resumed run ends bit-identical (CPU) to an uninterrupted one.

The training step does no host synchronisation: loss and accuracy accumulate on the device and a
non-finite loss is recorded as a device-side step index that is checked every `check_every` steps.
The objective is `noisekd.objective`; checkpoints `noisekd.checkpoints`; devices, signals, runs
side by side and CUDA graphs `noisekd.execution`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import checkpoints
from .data import DeviceSampler, ImageData, to_float
from .errors import NoiseKDError
from .execution import (
    CAPTURE_LOCK,
    SIGNALLED,
    GraphedStep,
    TrainingInterrupted,
    resolve_device,
    resolve_numerics,
    stop_on_signals,
)
from .methods import Method, MethodParams
from .models import WideResNet, dropout_drawn_ahead, fold_batchnorm
from .objective import distillation_loss, set_teacher_mode
from .settings import RESUMABLE_SPEED_KEYS, Augmentation, TrainConfig, augmentation_variants


@dataclass
class TrainResult:
    summary: dict
    model: WideResNet = field(repr=False)


def stream_seed(seed: int, draws: str) -> int:
    """The generator seed of `seed` in the stream `draws` ("" -> the seed itself)."""
    if not draws:
        return int(seed)
    return int.from_bytes(hashlib.sha256(f"{draws}/{int(seed)}".encode()).digest()[:8], "little") >> 1


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
    teacher = _checked_teacher(student, train_data, method, params, teacher, augmentation, teacher_logits)
    run = _Run(student, train_data, config, method, params, teacher, augmentation, device, teacher_logits, draws)
    saver = _Checkpointer(checkpoint_path, config)
    start_epoch, start_step, perm = 0, 0, None
    if checkpoint_path is not None and Path(checkpoint_path).exists():
        start_epoch, start_step, perm = run.restore(checkpoints.load_run(checkpoint_path, run.identity, device))
        log(f"resumed from {checkpoint_path} at epoch {start_epoch + 1}, step {start_step}")
    run.compile()
    graphed = (GraphedStep(run.step, config.batch_size, run.generator)
               if device.type == "cuda" and config.cuda_graphs else None)
    log(f"training {run.student.spec.name} with {method.name} on {len(run.data)} images, {config.epochs} epochs, "
        f"{len(run.sampler)} steps/epoch, device {device}, {run.precision}"
        f"{', CUDA graphs' if graphed else ''}{', compiled' if run.compiled else ''}"
        f"{', cached teacher logits' if teacher_logits is not None else ''}, seed {config.seed}")
    nets = [net for net in (run.student, run.teacher) if net is not None]
    image_size = tuple(run.data.images.shape[-2:])  # crops keep the size
    with stop_on_signals(), dropout_drawn_ahead(nets, config.batch_size, image_size, run.generator,
                                                run.channels_last):
        for epoch in range(start_epoch, config.epochs):
            run.train_epoch(epoch, perm, start_step, graphed, saver, log)
            perm, start_step = None, 0
    return TrainResult(summary=run.summary(train_data, run_info, graphed), model=run.student)


def _checked_teacher(student, train_data, method, params, teacher, augmentation, teacher_logits):
    """The teacher `fit` trains with (None where a logits table stands in), refusing inputs that do
    not fit the method, the data or each other."""
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
    if student.spec.num_classes != train_data.num_classes:
        raise NoiseKDError(f"student has {student.spec.num_classes} outputs, data has {train_data.num_classes} classes")
    return teacher


class _Checkpointer:
    """Saves a run's checkpoint every `checkpoint_every` epochs, at least `checkpoint_interval_s` apart;
    the last epoch and a signal always save one.  Without a path it saves nothing."""

    def __init__(self, path: str | Path | None, config: TrainConfig):
        self.path, self.config, self.last_saved = path, config, time.monotonic()
        if path is not None:
            checkpoints.remove_partial(path)

    def save(self, run: "_Run", epoch: int, step: int, perm: torch.Tensor | None) -> None:
        if self.path is not None:
            checkpoints.save_run(self.path, run.state(epoch, step, perm))

    def end_of_epoch(self, run: "_Run", epoch: int, signalled: bool) -> None:
        due = (epoch + 1) % self.config.checkpoint_every == 0 and (
            time.monotonic() - self.last_saved >= self.config.checkpoint_interval_s)
        if due or epoch + 1 == self.config.epochs or signalled:
            self.save(run, epoch + 1, 0, None)
            self.last_saved = time.monotonic()


class _Run:
    """One training run's state on its device (networks, optimizer, generator, sampler, running sums,
    history) and the step that advances it."""

    def __init__(self, student, train_data, config, method, params, teacher, augmentation, device, teacher_logits,
                 draws):
        self.config, self.method, self.params, self.device = config, method, params, device
        self.precision, self.channels_last = resolve_numerics(config, device)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.student = student.to(device, memory_format=memory_format)
        self.teacher = None
        if teacher is not None:
            # The frozen teacher only ever runs in eval mode: an inference copy with BatchNorm folded.
            # A copy: runs side by side may share the caller's teacher, which must not change under them.
            self.teacher = fold_batchnorm(teacher).to(device, memory_format=memory_format)
            set_teacher_mode(self.teacher, fickle=method.fickle_teacher)
        self.data = train_data.to(device)
        self.teacher_logits = teacher_logits.to(device) if teacher_logits is not None else None
        self.generator = torch.Generator(device=device).manual_seed(stream_seed(config.seed, draws))
        self.optimizer = torch.optim.SGD(self.student.parameters(), lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay,
                                         **({"fused": True} if device.type == "cuda" else {}))
        self.sampler = DeviceSampler(self.data, config.batch_size, self.generator, augmentation)
        # Running sums live on the device; the step never waits for the host.
        self.acc_loss = torch.zeros((), device=device, dtype=torch.float64)
        self.acc_correct = torch.zeros((), device=device, dtype=torch.int64)
        self.bad_step = torch.full((), -1, device=device, dtype=torch.int64)
        self.history: list[dict] = []
        self.identity = self._identity(train_data, augmentation, draws)
        self.student_fn, self.teacher_fn, self.compiled, self.teacher_stream = self.student, self.teacher, False, None

    def _identity(self, train_data, augmentation, draws) -> dict:
        """What the run trains from; a checkpoint of another identity is refused, not resumed."""
        config = self.config
        # precision as resolved: a retry on a node whose CPU resolves `auto` otherwise must not resume the run
        run_config = {**{k: v for k, v in asdict(config).items() if k not in RESUMABLE_SPEED_KEYS},
                      "precision": self.precision}
        fp = checkpoints.fingerprint
        identity = {"method": self.method.name, "params": asdict(self.params), "config": run_config,
                    "spec": asdict(self.student.spec), "draws": draws,
                    "augmentation": asdict(augmentation) if augmentation is not None else None,
                    # the inputs themselves: a rerun after the data, labels or teacher changed starts over
                    "data": fp(train_data.images, train_data.labels),
                    "teacher": fp(*self.teacher.state_dict().values()) if self.teacher is not None else None}
        if self.teacher_logits is not None:
            identity["teacher_logits"] = fp(self.teacher_logits)  # other rounding than live: never switch midway
        return json.loads(json.dumps(identity))

    def compile(self) -> None:
        """torch.compile the forwards used inside the loop (CUDA, train.compile); the returned model
        stays a plain module.  Dropout masks are drawn ahead of each forward, so dropout networks
        compile whole too.  Also opens the teacher's side stream (CUDA, train.teacher_stream)."""
        if self.config.compile and self.device.type == "cuda":
            self.compiled = True
            self.student_fn = torch.compile(self.student, dynamic=False)
            if self.teacher is not None:
                self.teacher_fn = torch.compile(self.teacher, dynamic=False)
        if self.device.type == "cuda" and self.teacher is not None and self.config.teacher_stream:
            self.teacher_stream = torch.cuda.Stream(device=self.device)

    def state(self, epoch: int, step: int, perm: torch.Tensor | None) -> dict:
        return {"identity": self.identity, "model": {k: v.detach().cpu() for k, v in self.student.state_dict().items()},
                "optimizer": checkpoints.to_cpu(self.optimizer.state_dict()), "generator": self.generator.get_state().cpu(),
                "epoch": epoch, "step": step, "perm": perm.cpu() if perm is not None else None,
                "acc_loss": float(self.acc_loss), "acc_correct": int(self.acc_correct), "history": self.history}

    def restore(self, state: dict) -> tuple[int, int, torch.Tensor | None]:
        """Load a checkpoint's state; returns (epoch, step, batch order) to resume at."""
        self.student.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"].cpu())
        self.acc_loss.fill_(state["acc_loss"])
        self.acc_correct.fill_(state["acc_correct"])
        self.history = list(state["history"])
        perm = state["perm"].to(self.device) if state["perm"] is not None else None
        return state["epoch"], state["step"], perm

    def autocast(self):
        # No autocast weight cache: it would be stale inside a replayed graph (and buys nothing here).
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=False)
        return contextlib.nullcontext()

    def step(self, idx: torch.Tensor, step) -> None:
        """One optimisation step on the samples `idx`, augmented; `step` (int or device tensor) is only
        recorded if the loss turns non-finite.  Touches tensors only: safe to capture in a CUDA graph."""
        images, labels, variant = self.sampler.gather(idx)
        x = to_float(images)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        cached = self.teacher_logits[idx, variant] if self.teacher_logits is not None else None
        with self.autocast():
            loss, logits = distillation_loss(self.method, self.params, self.student_fn, self.teacher_fn, x, labels,
                                             self.data.num_classes, self.generator, self.teacher_stream, cached)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        detached = loss.detach()
        self.bad_step.copy_(torch.where((self.bad_step < 0) & ~torch.isfinite(detached), step, self.bad_step))
        self.acc_loss.add_(detached.double() * labels.shape[0])
        self.acc_correct.add_((logits.detach().argmax(1) == labels).sum())

    def _step_on(self, idx: torch.Tensor, step: int, lr: float, graphed: GraphedStep | None) -> None:
        if graphed is not None and graphed.ready(len(idx), lr):
            graphed.replay(idx, step)
        elif graphed is not None:
            with CAPTURE_LOCK:  # may compile, which must not overlap another thread's capture
                self.step(idx, step)
            graphed.eager_steps += 1
        else:
            self.step(idx, step)

    def train_epoch(self, epoch: int, perm, start_step: int, graphed, saver: _Checkpointer, log) -> None:
        """Epoch `epoch` from step `start_step` (a resumed epoch keeps its batch order `perm`); a signal
        saves a checkpoint at the next step and raises TrainingInterrupted."""
        config, flag, steps = self.config, SIGNALLED, len(self.sampler)
        lr = config.lr_at(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.student.train()
        if perm is None:
            perm = self.sampler.permutation()
            self.acc_loss.zero_()
            self.acc_correct.zero_()
        t0, images_seen = time.perf_counter(), 0
        for step in range(start_step, steps):
            idx = self.sampler.indices(perm, step)
            self._step_on(idx, step, lr, graphed)
            images_seen += len(idx)
            last = step == steps - 1
            if (step + 1) % config.check_every == 0 or last or flag:
                _raise_if_bad(self.bad_step, epoch)
            if flag and not last:
                saver.save(self, epoch, step + 1, perm)
                log(f"signal {flag['signal']}: checkpoint saved at epoch {epoch + 1}, step {step + 1}")
                raise TrainingInterrupted(f"interrupted by signal {flag['signal']} at epoch {epoch + 1}")
        n = len(self.data)
        record = {"epoch": epoch + 1, "loss": float(self.acc_loss) / n, "train_acc": float(self.acc_correct) / n,
                  "lr": lr, "images_per_s": images_seen / max(time.perf_counter() - t0, 1e-9)}
        self.history.append(record)
        log(f"epoch {epoch + 1:>4}/{config.epochs}  loss {record['loss']:.4f}  "
            f"train_acc {100 * record['train_acc']:6.2f}%  lr {lr:.5f}  {record['images_per_s']:9.1f} img/s")
        saver.end_of_epoch(self, epoch, bool(flag))
        if flag and epoch + 1 < config.epochs:
            log(f"signal {flag['signal']}: checkpoint saved after epoch {epoch + 1}")
            raise TrainingInterrupted(f"interrupted by signal {flag['signal']} after epoch {epoch + 1}")

    def summary(self, train_data: ImageData, run_info: dict | None, graphed: GraphedStep | None) -> dict:
        history = self.history
        return {
            **self.identity,
            "run": run_info or {},
            "epochs_done": self.config.epochs,
            "image_size": list(train_data.images.shape[-2:]),  # evaluation outside the workflow checks it
            "final_loss": history[-1]["loss"] if history else None,
            "final_train_acc": history[-1]["train_acc"] if history else None,
            "history": history,
            "device": str(self.device),
            "precision": self.precision,
            "channels_last": self.channels_last,
            "cuda_graphs": graphed.stats() if graphed is not None else None,
            "compiled": self.compiled,
            "teacher_logits": "cached" if self.teacher_logits is not None else None,
            "torch": torch.__version__,
        }


def _raise_if_bad(bad_step: torch.Tensor, epoch: int) -> None:
    step = int(bad_step)  # the only host sync, every check_every steps
    if step >= 0:
        raise NoiseKDError(
            f"non-finite loss at epoch {epoch + 1}, step {step + 1}; stopped without checkpointing this epoch"
        )
