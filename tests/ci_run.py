"""Running the `ci` preset through Snakemake, for the end-to-end tests (a helper, not a test module)."""

from pathlib import Path

from test_workflow import snakemake


def preset(tmp_path: Path, name: str) -> Path:
    """A config file that sends the ci preset's results to `tmp_path/name`."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"results_dir: {tmp_path / name}\n")
    return path


def run_ci_preset(tmp_path: Path, name: str, *extra: str, timeout: int = 900, env=None):
    override = preset(tmp_path, name)
    proc = snakemake("all_tables", *extra, "--configfile", "presets/ci.yaml", str(override), timeout=timeout,
                     env=env)
    return tmp_path / name, proc


def stale_copy_first(tmp_path: Path) -> dict:
    """PYTHONPATH with a `noisekd` that fails on import ahead of site-packages: a stale installed copy.

    The run must still pass, because the Snakefile and every job import this checkout's noisekd.
    """
    stale = tmp_path / "stale" / "noisekd"
    stale.mkdir(parents=True)
    (stale / "__init__.py").write_text('raise ImportError("a stale installed copy of noisekd was imported")\n')
    return {"PYTHONPATH": str(stale.parent)}
