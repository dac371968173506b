"""Best-teacher selection: which seed of a teacher kind its students learn from.

`select` writes, for every rule at once, the seed it selects (`test`: the paper's best test accuracy;
`validation`: the best accuracy on the held-out split).  The file therefore depends on the teachers
alone: switching `teacher_selection.by` does not rewrite it, and only the jobs whose selected seed
changes (they read it when the DAG is built) rerun.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import NoiseKDError

RULES = {"test": "test_acc", "validation": "val_acc"}


def select(candidates: list[dict]) -> dict:
    """`candidates`: one dict per teacher seed with its `seed`, `test_acc` and, with a held-out split,
    `val_acc`.  Ties go to the lowest seed."""
    selected = {}
    for rule, key in RULES.items():
        scored = [c for c in candidates if c.get(key) is not None]
        if scored:
            best = max(scored, key=lambda c: (c[key], -c["seed"]))
            selected[rule] = {"seed": best["seed"], "accuracy": best[key]}
    return {"selected": selected, "candidates": sorted(candidates, key=lambda c: c["seed"])}


def read(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise NoiseKDError(f"teacher selection {path} is unreadable: {exc}") from None


def selected_seed(path: str | Path, by: str) -> int:
    """The seed that the selection file `path` selects by rule `by`."""
    selected = read(path).get("selected", {})
    if by not in selected:
        raise NoiseKDError(f"teacher selection {path} has no seed selected by {by} accuracy "
                           f"(config key teacher_selection.by; {by} needs a held-out split)")
    return int(selected[by]["seed"])


def candidate_rows(path: str | Path, by: str) -> list[dict]:
    """Every candidate seed's selection accuracy under rule `by`, as result rows."""
    key = RULES[by]
    return [{"role": "teacher_candidate", "seed": c["seed"], "metric": "selection_acc", "value": c[key]}
            for c in read(path)["candidates"]]
