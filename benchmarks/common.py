"""What every benchmark shares: device description, synchronisation, and one JSON record per run.

A record is printed as one JSON line and also written to ``results/benchmarks/<name>-<device>-<time>.json``
(``--out-dir`` to change), so measured figures are kept with the date, device and command that made them.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from noisekd.io import write_json_atomic

DEFAULT_OUT_DIR = Path("results/benchmarks")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device) if torch.cuda.is_available() else "(no CUDA device here)"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or "cpu"


def context(device: torch.device) -> dict:
    """Where and when a figure was measured."""
    return {
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["python"] + getattr(sys, "orig_argv", sys.argv)[1:]),
    }


def emit(record: dict, out_dir: str | os.PathLike | None = DEFAULT_OUT_DIR) -> dict:
    """Print the record as one JSON line and write it under `out_dir` (None: print only)."""
    line = json.dumps(record)
    print(line, flush=True)
    if out_dir is not None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dev = str(record.get("device", "na")).replace(":", "")
        write_json_atomic(Path(out_dir) / f"{record['benchmark']}-{dev}-{stamp}.json", record)
    return record
