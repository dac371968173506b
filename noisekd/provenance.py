"""Where a result came from: settings hash, git commit, package versions, device."""

from __future__ import annotations

import functools
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from .lineage import settings_hash

CODE_PATHS = ("noisekd", "rules", "workflow_scripts", "Snakefile")
PACKAGES = ("noisekd", "torch", "torchvision", "numpy", "scipy", "scikit-image", "scikit-learn", "pandas", "snakemake")


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


def provenance(settings: dict | None, device: torch.device | str) -> dict:
    """The provenance columns of result rows: the hash of the settings they were computed with (see
    `noisekd.lineage`), the code's commit, the package versions and the device."""
    return {
        "settings_hash": settings_hash(settings or {}),
        "git_commit": git_commit(),
        "versions": json.dumps(package_versions(), sort_keys=True),
        "device": device_name(device),
    }
