"""How training runs execute: device and precision, signals, runs side by side, CUDA graphs.

None of this changes a number of a run (precision aside, which `resolve_numerics` resolves from the
run's settings): it decides where a run computes, how a SLURM time limit stops it, and how several
runs share one GPU.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import subprocess
import threading
from pathlib import Path
from typing import Callable

import torch

from .errors import NoiseKDError
from .settings import TrainConfig


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


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# -- a GPU job on a node whose GPU torch cannot use ------------------------------------------------

# The oldest Linux driver (major version) that runs a CUDA <major>.x build, by NVIDIA's minor-version
# compatibility (CUDA Toolkit release notes, table "CUDA Toolkit and Minimum Required Driver Version").
MIN_DRIVER = {13: 580, 12: 525, 11: 450}
# The newest PyTorch wheel index a driver can run: (oldest driver major, index).
TORCH_WHEELS = ((580, "cu130"), (525, "cu126"), (450, "cu118"))
WHEEL_INDEX = "https://download.pytorch.org/whl/"


def nvidia_driver_version(proc_file: str | Path = "/proc/driver/nvidia/version", timeout: float = 10.0,
                          run: Callable = subprocess.run) -> str | None:
    """The node's NVIDIA driver version ("535.104.05"): from the kernel module's /proc file, else from
    nvidia-smi (bounded by `timeout`); None where neither says (no driver, or not readable here)."""
    try:
        found = re.search(r"Kernel Module\b.*?\s(\d+\.\d+(?:\.\d+)?)\s", Path(proc_file).read_text())
        if found:
            return found.group(1)
    except OSError:
        pass
    try:
        proc = run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                   capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    first = (proc.stdout or "").split()[:1] if proc.returncode == 0 else []
    return first[0] if first and re.fullmatch(r"\d+(\.\d+)+", first[0]) else None


def _pins() -> str:
    """This torch and torchvision as pip requirements (the same releases, another CUDA build)."""
    from importlib import metadata

    pins = [f"torch=={torch.__version__.split('+')[0]}"]
    with contextlib.suppress(metadata.PackageNotFoundError):
        pins.append(f"torchvision=={metadata.version('torchvision').split('+')[0]}")
    return " ".join(pins)


def torch_for_driver(driver: str | None) -> str:
    """What to install: this torch release from the PyTorch wheel index the driver can run."""
    major = int(driver.split(".")[0]) if driver else None
    for oldest, index in TORCH_WHEELS:
        if major is not None and major >= oldest:
            return f"pip install {_pins()} --index-url {WHEEL_INDEX}{index}"
    if major is not None:
        return f"no PyTorch build runs on it, update the NVIDIA driver (>= {TORCH_WHEELS[-1][0]})"
    return f"pip install {_pins()} --index-url {WHEEL_INDEX}cu<the driver's CUDA, nvidia-smi shows it, e.g. 126>"


def cuda_unusable_reason(torch_cuda: str | None, driver: str | None) -> str:
    """Why torch sees no GPU, and what to do, from torch's CUDA version and the node's driver."""
    build = f"torch {torch.__version__}"
    if torch_cuda is None:
        return (f"{build} is a CPU-only build (torch.version.cuda is None); install a CUDA build: "
                f"{torch_for_driver(driver)}")
    if driver is None:
        return (f"{build} is built for CUDA {torch_cuda} but no NVIDIA driver was found (no /proc/driver/nvidia/"
                "version, no nvidia-smi): a node without a GPU, or a wrong partition")
    needed = MIN_DRIVER.get(int(torch_cuda.split(".")[0]))
    if needed is not None and int(driver.split(".")[0]) < needed:
        return (f"the NVIDIA driver {driver} is too old for {build}, built for CUDA {torch_cuda} (needs driver >= "
                f"{needed}); install a torch build matching the driver ({torch_for_driver(driver)}) or run on nodes "
                "with a newer driver")
    return (f"{build} (CUDA {torch_cuda}) and the NVIDIA driver {driver} should match: check CUDA_VISIBLE_DEVICES "
            "and nvidia-smi on the node")


def check_gpu_job(gpus: int, device: str | None, environ=os.environ,
                  cuda_available: Callable[[], bool] = torch.cuda.is_available) -> None:
    """A SLURM job that asked for GPUs and sees none (a bad node, a wrong CUDA_VISIBLE_DEVICES, a torch
    build too new for the node's driver) fails at once, saying why in one line: with `device: auto` it
    would otherwise train on the CPU until its runtime limit."""
    if gpus > 0 and device in (None, "auto") and environ.get("SLURM_JOB_ID") and not cuda_available():
        reason = cuda_unusable_reason(torch.version.cuda, nvidia_driver_version())
        raise NoiseKDError(
            f"SLURM job {environ['SLURM_JOB_ID']} on {environ.get('SLURMD_NODENAME', 'this node')} asked for "
            f"{gpus} GPU(s) (config key resources.gpu) but sees no CUDA device (CUDA_VISIBLE_DEVICES="
            f"{environ.get('CUDA_VISIBLE_DEVICES')!r}): {reason}; or set device: cpu to run on CPUs")


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
