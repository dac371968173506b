"""Where a result came from: config hash, git commit, package versions, device."""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

CODE_PATHS = ("noisekd", "rules", "workflow_scripts", "Snakefile")
PACKAGES = ("noisekd", "torch", "torchvision", "numpy", "scipy", "scikit-image", "scikit-learn", "pandas", "snakemake")


def config_hash(obj) -> str:
    """Stable short hash of a JSON-able object (key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@functools.cache
def git_commit(repo: str | None = None) -> str:
    """The commit of the code that produced a result, '+dirty' if the tree had changes."""
    cwd = repo or str(Path(__file__).resolve().parent.parent)
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                 capture_output=True, text=True, timeout=10)
        # New files count where a run could import or execute them, not a config left in the root.
        new_code = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "--", *CODE_PATHS],
                                  cwd=cwd, capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("+dirty" if changed.stdout.strip() or new_code.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.cache
def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()}"


# Where a config writes and reads, not what it computes: left out of the hash, so the same
# experiment run into another folder carries the same config hash.
LOCATION_KEYS = ("results_dir", "data_dir")


def settings_hash(config: dict | None) -> str:
    """The hash that result rows and the manifest carry: the config without its locations."""
    return config_hash({k: v for k, v in (config or {}).items() if k not in LOCATION_KEYS})


def provenance(config: dict | None, device: torch.device | str) -> dict:
    return {
        "config_hash": settings_hash(config),
        "git_commit": git_commit(),
        "versions": json.dumps(package_versions(), sort_keys=True),
        "device": device_name(device),
    }
