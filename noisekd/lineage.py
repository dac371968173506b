"""A result's settings: everything that was chosen upstream of its numbers, recorded in the file itself.

A job's settings are its rule `params:` (what the plan resolves for it from the config), and they
hold the whole lineage: a student's evaluation records the data, label corruption, teacher and
student training and the evaluation it was computed with, as named blocks::

    {"data": {...}, "labels": None, "teacher": {...}, "student": {...}, "seed": 0, "evaluation": {...}}

Every result file carries them, and tables and the aggregate compare each file's with what the
current config expects before they use it (`check`), so results of another config, of an older code
version or of a run with `--rerun-triggers mtime` are refused instead of mixed in silently.
"""

from __future__ import annotations

import hashlib
import json

from .errors import NoiseKDError


def canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def settings_hash(settings) -> str:
    """A short, stable hash of settings (key order does not matter): the `settings_hash` of rows."""
    return hashlib.sha256(canonical(settings).encode()).hexdigest()[:16]


def first_difference(found, expected, key: str = ""):
    """(dotted key, found value, expected value) of the first difference, or None if equal."""
    if isinstance(found, dict) and isinstance(expected, dict):
        for k in list(expected) + [k for k in found if k not in expected]:
            sub = f"{key}.{k}" if key else str(k)
            if k not in found:
                return sub, "<absent>", expected[k]
            if k not in expected:
                return sub, found[k], "<absent>"
            diff = first_difference(found[k], expected[k], sub)
            if diff:
                return diff
        return None
    # JSON round trips turn tuples into lists: compare as JSON does.
    return None if canonical(found) == canonical(expected) else (key or "settings", found, expected)


def pack(files: dict[str, dict]) -> dict:
    """Expected settings of many files, their shared blocks stored once (a table's rule params)."""
    blocks: dict[str, object] = {}
    refs: dict[str, dict[str, str]] = {}
    for path, settings in files.items():
        refs[path] = {}
        for name, value in settings.items():
            h = settings_hash(value)
            blocks[h] = value
            refs[path][name] = h
    return {"blocks": blocks, "files": refs}


def unpack(packed: dict) -> dict[str, dict]:
    blocks = packed["blocks"]
    return {path: {name: blocks[h] for name, h in refs.items()} for path, refs in packed["files"].items()}


def check(path: str, found: dict | None, expected: dict) -> None:
    """Refuse, in one line naming the file and the first differing key, a result whose recorded settings
    are not the ones the current config expects of it."""
    if found is None:
        raise NoiseKDError(f"{path} records no settings (written by an older version of noisekd?); "
                           f"rebuild it: snakemake --forcerun {path}")
    diff = first_difference(found, expected)
    if diff:
        key, was, now = diff
        raise NoiseKDError(f"{path} was computed with {key} = {canonical(was)}, but this config expects "
                           f"{canonical(now)}; rebuild it: snakemake --forcerun {path}")


# -- the settings a rows file records (torch-free, so report jobs need no torch) -------------------

SETTINGS_METADATA_KEY = b"noisekd.settings"


def write_rows_table(table, path, settings: dict | None = None) -> None:
    """A pyarrow table of result rows to parquet, `settings` in its key-value metadata (`read_rows_settings`)."""
    import pyarrow.parquet as pq

    from .io import atomic_path

    if settings is not None:
        blob = json.dumps(settings, sort_keys=True, default=str).encode()
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), SETTINGS_METADATA_KEY: blob})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_rows_settings(path) -> dict | None:
    """The settings stored with a rows file by `write_rows_table`, or None."""
    import pyarrow.parquet as pq

    try:
        blob = (pq.read_schema(path).metadata or {}).get(SETTINGS_METADATA_KEY)
    except (OSError, ValueError) as exc:
        raise NoiseKDError(f"result file {path} is unreadable (truncated or corrupt?): {exc}") from None
    return json.loads(blob) if blob else None
