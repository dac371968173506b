"""The value types that the plan, the rules and the library share, with no torch import.

Planning the DAG (the Snakefile, `noisekd.plan`) uses these without loading torch; the library builds
its networks, loops and attacks from them.  Each type knows which of its fields change a result's
numbers (a job's settings, which reach it as rule `params:`) and which only its speed (`Runtime`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .errors import NoiseKDError

PRECISIONS = ("auto", "bf16", "fp32")
# Training keys that change speed but not a number of the run: never a job's settings, so changing
# them reruns nothing.  `compile` changes rounding only, like the batch composition of a GPU kernel.
TRAIN_SPEED_KEYS = ("compile", "cuda_graphs", "teacher_stream", "checkpoint_every", "checkpoint_interval_s",
                    "check_every", "cache_teacher_logits")
# ... and of those, the ones a run may switch when it resumes from a checkpoint (compiled and eager
# steps round differently, so a run never switches between them midway).
RESUMABLE_SPEED_KEYS = tuple(k for k in TRAIN_SPEED_KEYS if k != "compile")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 200
    milestones: tuple[int, ...] = (60, 120, 150)
    lr: float = 0.1
    lr_decay: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    seed: int = 0
    checkpoint_every: int = 1  # epochs between resumable checkpoints
    # ... and at least this many seconds apart (0: no gate), so a one-second GPU epoch does not write
    # (and fsync) one per epoch; a signal (SIGTERM, SIGINT) and the last epoch always save one.
    checkpoint_interval_s: float = 0.0
    check_every: int = 50  # steps between (cheap) host checks for a non-finite loss
    # Speed settings.  precision: "auto" (bf16 autocast where the device computes bf16 natively:
    # CUDA, and CPUs with AVX512-BF16/AMX), "bf16" or "fp32"; losses always stay fp32.
    precision: str = "auto"
    channels_last: bool = True  # NHWC activations (CUDA, and CPU when computing in bf16)
    cuda_graphs: bool = True  # replay each full-batch step as one CUDA graph (same numbers, no launch gaps)
    teacher_stream: bool = True  # CUDA: teacher forward beside the student's, on a second stream (same numbers)
    compile: bool = False  # CUDA only: torch.compile the networks (fuses BN/ReLU; ~45 s of compiling per job)
    # Workflow: students whose teacher only gives logits look them up in a table computed once per
    # teacher (`noisekd.teacher_logits`) instead of running the teacher every step.
    cache_teacher_logits: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise NoiseKDError(f"train.epochs must be >= 1, got {self.epochs}")
        ms = list(self.milestones)
        if ms != sorted(ms) or len(set(ms)) != len(ms) or any(m < 1 for m in ms):
            raise NoiseKDError(f"train.milestones must be increasing positive epochs, got {ms}")
        if ms and ms[-1] >= self.epochs:
            raise NoiseKDError(f"train.milestones {ms} has a milestone beyond the last epoch ({self.epochs})")
        for name in ("lr", "lr_decay", "momentum", "weight_decay"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise NoiseKDError(f"train.{name} must be a finite number >= 0, got {getattr(self, name)}")
        if self.batch_size < 1 or self.checkpoint_every < 1 or self.check_every < 1:
            raise NoiseKDError("train.batch_size, checkpoint_every and check_every must be >= 1")
        if not math.isfinite(self.checkpoint_interval_s) or self.checkpoint_interval_s < 0:
            raise NoiseKDError(
                f"train.checkpoint_interval_s must be a finite number >= 0, got {self.checkpoint_interval_s}")
        if self.precision not in PRECISIONS:
            raise NoiseKDError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def lr_at(self, epoch: int) -> float:
        """MultiStepLR semantics, derived from the epoch so a resumed run needs no scheduler state."""
        return self.lr * self.lr_decay ** sum(1 for m in self.milestones if m <= epoch)

    def numbers(self) -> dict:
        """The settings that change a run's numbers (the seed aside): a training job's `train` settings."""
        out = {k: v for k, v in asdict(self).items() if k not in TRAIN_SPEED_KEYS and k != "seed"}
        return {**out, "milestones": list(self.milestones)}  # plain JSON: settings are recorded in files

    @classmethod
    def from_settings(cls, numbers: dict, speed: dict, seed: int) -> "TrainConfig":
        """A run's config from its job's `train` settings and the runtime's speed options."""
        return cls(**{**numbers, "milestones": tuple(numbers["milestones"])}, **speed, seed=int(seed))


@dataclass(frozen=True)
class RobustMetric:
    """A robust-accuracy aggregate of one PGD setting: its result-row name and what it is, said once for
    every table, figure and caption that shows it."""

    name: str
    label: str  # a block heading or axis note
    definition: str  # "{restarts}" is filled in

    def describe(self, restarts: int) -> str:
        return self.definition.format(restarts=restarts)


# §2.3 reports "the worst performance of 5 random initialization runs"; a run, as Madry et al.'s PGD
# and torchattacks score it, counts its final iterate.
AUTHORS_AGGREGATE = RobustMetric(
    "robust_acc_final_min_over_runs", "The authors' aggregate (worst of runs, final iterate)",
    "the worst of {restarts} whole-test-set PGD runs from random starts, each scored by its final iterate (§2.3)")
# The stronger, per-sample reading: robust only if no iterate of any restart fools the model.
WORST_OF_RESTARTS = RobustMetric(
    "robust_acc_worst_of_restarts", "Worst of restarts (any iterate)",
    "a sample counts as robust only if no iterate of any of its {restarts} restarts is misclassified")
ROBUST_METRICS = (AUTHORS_AGGREGATE, WORST_OF_RESTARTS)  # the order the tables show them in


@dataclass(frozen=True)
class AttackSetting:
    """One PGD evaluation: eps and step size in [0, 1] pixel units."""

    steps: int
    eps: float
    step_size: float
    restarts: int = 5

    def __post_init__(self) -> None:
        if self.steps < 0 or self.restarts < 1 or not (self.eps >= 0) or not (self.step_size >= 0):
            raise NoiseKDError(f"invalid attack setting {self}")


@dataclass(frozen=True)
class WRNSpec:
    """Everything needed to rebuild a network; stored in every checkpoint."""

    depth: int
    width: int
    num_classes: int = 10
    dropout: float = 0.0
    in_channels: int = 3
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)

    @property
    def name(self) -> str:
        return f"WRN-{self.depth}-{self.width}"

    def same_architecture(self, other: "WRNSpec") -> bool:
        """Dropout is a training-time choice, not part of the weights' shape."""
        a, b = asdict(self), asdict(other)
        a.pop("dropout"), b.pop("dropout")
        return a == b


@dataclass(frozen=True)
class Augmentation:
    """Per-dataset training augmentation: random crop with zero padding and optional h-flip."""

    crop_padding: int = 4
    hflip: bool = True


def augmentation_variants(aug: Augmentation | None) -> int:
    """How many distinct images `aug` makes of one image: (2p + 1)^2 crop offsets, times 2 with flips."""
    if aug is None:
        return 1
    side = 2 * aug.crop_padding + 1
    return side * side * (2 if aug.hflip else 1)


@dataclass(frozen=True)
class Runtime:
    """How and where a job runs, as opposed to what it computes: none of this is a job's settings, so
    changing it reruns nothing (and results record the device they ran on)."""

    device: str = "auto"
    threads: int = 1
    train_speed: tuple[tuple[str, object], ...] = ()  # TrainConfig's TRAIN_SPEED_KEYS as configured
    eval_batch_size: int = 1000  # images per no-grad pass (the result is the same for any size)
    data_dir: str = "data"
    results_dir: str = "results"

    @classmethod
    def from_config(cls, config: dict, threads: int = 1) -> "Runtime":
        train = config.get("train", {})
        speed = tuple((k, train[k]) for k in TRAIN_SPEED_KEYS if k in train)
        return cls(device=config.get("device") or "auto", threads=int(threads), train_speed=speed,
                   eval_batch_size=int(config.get("evaluation", {}).get("batch_size", 1000)),
                   data_dir=str(config.get("data_dir", "data")), results_dir=str(config.get("results_dir", "results")))

    @property
    def speed(self) -> dict:
        return dict(self.train_speed)
