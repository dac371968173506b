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
