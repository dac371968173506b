"""Model files and training checkpoints, both loaded with weights_only=True.

A model file holds the network's spec, its weights and the run summary (settings, seed, history).
A training checkpoint holds everything a run needs to resume bit-identically (weights, optimizer,
the run's generator, the epoch's batch order and position, running sums, history) and the run's
identity: what it trains from, so that a checkpoint of other inputs is refused, not resumed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import torch

from .errors import NoiseKDError
from .io import load_torch, save_torch_atomic
from .models import WideResNet, fold_batchnorm
from .settings import WRNSpec

CHECKPOINT_VERSION = 1


def save_model(path: str | Path, model: WideResNet, **extra) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_torch_atomic(path, {"format": "noisekd-model", "spec": asdict(model.spec), "state_dict": state, **extra})


def _spec_from(obj: dict, path) -> WRNSpec:
    """The recorded architecture, refused in one line naming the field unless a network can be built from it."""
    try:
        d = dict(obj["spec"])
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        spec = WRNSpec(**d)
    except (KeyError, TypeError, ValueError) as exc:
        raise NoiseKDError(f"checkpoint {path} has no valid model spec ({exc})") from None
    for field in ("depth", "width", "num_classes", "in_channels"):
        value = getattr(spec, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise NoiseKDError(f"checkpoint {path} records an invalid architecture: spec.{field} is {value!r}, "
                               "expected a positive integer")
    if isinstance(spec.dropout, bool) or not isinstance(spec.dropout, (int, float)):
        raise NoiseKDError(f"checkpoint {path} records an invalid architecture: spec.dropout is {spec.dropout!r}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (*spec.mean, *spec.std)):
        raise NoiseKDError(f"checkpoint {path} records an invalid architecture: spec.mean / spec.std must be numbers")
    return spec


def _build(spec: WRNSpec, path) -> WideResNet:
    """The network of a recorded spec; WideResNet's own checks (depth 6n+4, dropout in [0, 1), one
    mean and std per channel) become one line naming the checkpoint."""
    try:
        return WideResNet(spec)
    except ValueError as exc:
        raise NoiseKDError(f"checkpoint {path} records an invalid architecture ({spec.name}): {exc}") from None


def load_model(path: str | Path, expected: WRNSpec | None = None, device: str | torch.device = "cpu") -> WideResNet:
    """Load a saved model with weights_only=True; refuse one of another architecture."""
    obj = load_torch(path)
    if not isinstance(obj, dict) or "state_dict" not in obj:
        raise NoiseKDError(f"checkpoint {path} is not a noisekd model file")
    spec = _spec_from(obj, path)
    if expected is not None and not spec.same_architecture(expected):
        raise NoiseKDError(f"checkpoint {path} holds {spec.name} ({spec}), expected {expected.name} ({expected})")
    model = _build(spec, path)
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as exc:
        raise NoiseKDError(f"checkpoint {path} does not fit {spec.name}: {str(exc).splitlines()[0]}") from None
    return model.to(device)


def model_summary(path: str | Path) -> dict:
    """The run summary that `save_model` stored with a model (its settings, seed and history); {} if none."""
    obj = load_torch(path)
    text = obj.get("summary") if isinstance(obj, dict) else None
    if text is None:
        return {}
    try:
        summary = json.loads(text)
    except (TypeError, ValueError):
        summary = None
    if not isinstance(summary, dict):
        raise NoiseKDError(f"checkpoint {path} has an unreadable summary (expected a JSON object)")
    return summary


def inference_model(model: WideResNet) -> WideResNet:
    """The fastest equivalent of a trained model for evaluation and attacks: BatchNorm folded and
    channels_last weights (inputs stay NCHW; cuDNN and oneDNN take either).  On a CPU too: the demo's
    student evaluates 1.48x and attacks 1.24x faster so (benchmarks/cpu_inference.py)."""
    return fold_batchnorm(model).to(memory_format=torch.channels_last)


def fingerprint(*tensors: torch.Tensor) -> str:
    """A short hash of tensors' sizes, dtypes and bytes (a checkpoint's inputs)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous().reshape(-1)  # flat: 0-d tensors cannot be viewed as bytes
        h.update(f"{t.numel()}{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def remove_partial(path: str | Path) -> None:
    """Drop the temporary files a process killed inside atomic_path left beside `path`: never complete."""
    for stale in Path(path).parent.glob(f".{Path(path).name}.*.tmp"):
        stale.unlink(missing_ok=True)


def save_run(path: str | Path, state: dict) -> None:
    save_torch_atomic(path, {"version": CHECKPOINT_VERSION, **state})


def load_run(path: str | Path, identity: dict, device: torch.device) -> dict:
    """The state saved by `save_run`, refused unless it is of a run with this very identity."""
    state = load_torch(path, map_location=device)
    if state.get("identity") != json.loads(json.dumps(identity)):
        raise NoiseKDError(
            f"checkpoint {path} belongs to a different run (method/params/config/architecture differ); "
            "delete it to start over"
        )
    return state


def to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_cpu(v) for v in obj]
    return obj
