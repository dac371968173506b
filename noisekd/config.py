"""Config loading and validation with one-line errors that name the offending key."""

from __future__ import annotations

from pathlib import Path

import yaml

from .errors import NoiseKDError
from .methods import FEATURE_METHODS, METHODS
from .settings import AttackSetting

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schemas" / "config.schema.yaml"
PROTOCOL = ROOT / "config.yaml"  # the paper's protocol: the one place its settings are written


def _key(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


# Keys that were settings once, and what replaced them (named instead of "not a known setting").
RETIRED = {
    ("resources", "train_runtime_min"): "was replaced by resources.train_min_per_epoch and "
    "resources.train_overhead_min (a training job's time limit now follows its epochs, see noisekd/resources.py)",
}


def check_config(config: dict, schema_path: str | Path = SCHEMA) -> None:
    """Raise NoiseKDError naming the first offending key (the most specific schema error).  Method
    names are checked against the registry (`noisekd.methods`), which the schema leaves open."""
    import jsonschema

    for (block, key), hint in RETIRED.items():
        if isinstance(config.get(block), dict) and key in config[block]:
            raise NoiseKDError(f"config key {block}.{key} {hint}")
    schema = yaml.safe_load(Path(schema_path).read_text())
    schema["$defs"]["method"] = {"enum": list(METHODS)}
    schema["$defs"]["feature_method"] = {"enum": list(FEATURE_METHODS)}
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is None:
        return
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        key = _key(list(error.absolute_path) + missing[:1])
        raise NoiseKDError(f"config key {key} is missing")
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        raise NoiseKDError(f"config key {_key(list(error.absolute_path) + extra[:1])} is not a known setting")
    message = error.message if len(error.message) < 200 else error.message[:200] + "..."
    raise NoiseKDError(f"config key {_key(error.absolute_path)}: {message}")


def load_config(*paths: str | Path) -> dict:
    """config.yaml merged with presets, as Snakemake merges --configfile (for Python users and tests)."""
    from .plan import deep_merge

    config: dict = {}
    for p in paths:
        config = deep_merge(config, yaml.safe_load(Path(p).read_text()) or {})
    return config


def protocol_attack() -> AttackSetting:
    """The paper's main PGD evaluation (Figure 2, Table S1) as config.yaml states it."""
    pgd = load_config(PROTOCOL)["evaluation"]["pgd"]
    return AttackSetting(pgd["steps"], pgd["eps_255"] / 255, pgd["step_size"], pgd["restarts"])
