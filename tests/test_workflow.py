"""The Snakemake workflow: dry runs of the paper-scale DAG, per-target DAGs, lint, format, config errors."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from noisekd.config import check_config, load_config
from noisekd.errors import NoiseKDError
from noisekd.plan import Plan, report_inputs, report_names, reports

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")


def snakemake(*args, cwd=ROOT, timeout=300, check=True, env=None):
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    proc = subprocess.run([SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    block = output.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", block, re.M)}


def dry_run(*args, **kw):
    proc = snakemake("-n", "--forceall", "--cores", "2", *args, **kw)  # independent of existing results
    return job_counts(proc.stdout + proc.stderr)


def test_paper_dag_job_counts_follow_the_protocol():
    counts = dry_run("--profile", "slurm", "all_tables")  # as the cluster runs it (the profile changes no job)
    # Hand count from config.yaml.  Teacher kinds per dataset: plain, 5 dropout rates (FT-0.1..0.5),
    # 5 label-corruption rates (0.1..0.5) = 11 kinds x 2 datasets, each one job training its 5 seeds.
    assert counts["train_teachers"] == counts["select_teacher"] == counts["evaluate_teacher"] == 11 * 2
    # Student cells.  CIFAR-10: Table 1 (7 methods + 5 FT) + Table 2 (5 +H, 5 +FT) + GA/SR x 10 sigma
    # + MC (5 rates at corruption 0; baseline, Hinton, 5 rates at each of 5 corruptions)
    # + related (feature mimicry x 2 sigma, Noisy Teacher L2/KL) = 12 + 10 + 20 + 40 + 4 = 86.
    # SVHN: 12 + 20 + 40 = 72.  One training job per cell for its five seeds, one evaluation job per cell.
    assert counts["train_students"] == counts["evaluate_students"] == 86 + 72
    # Attacks: GA/SR cells (20 per dataset) and the 4 related noisy cells of CIFAR-10, one job per cell.
    assert counts["attack_students"] == 20 + 20 + 4
    assert counts["corrupt_labels"] == 5 * 2
    # Logits tables: the teachers of Hinton, SR, MC and Noisy Teacher cells -- plain and the 5
    # label-corruption kinds per dataset; the dropout teachers of FT and those of AT/SP/RKD/feature
    # mimicry (features, not only logits) are run live.
    assert counts["teacher_logits"] == 6 * 2
    assert counts["prepare_dataset"] == 2 and counts["prepare_ood"] == 1 and counts["prepare_corruptions"] == 1
    assert counts["fetch_corruptions"] == 1  # the released CIFAR-10-C, downloaded by a local job
    assert counts["table"] == len(report_names(Plan(load_config(ROOT / "config.yaml")), "table")) == 9
    assert counts["figure"] == 4
    assert counts["scorecard"] == counts["aggregate"] == 1
    # A shared cluster's queue sees at most 450 GPU jobs (each pays a queue wait and a Python + torch start).
    gpu_rules = ("train_teachers", "evaluate_teacher", "teacher_logits", "train_students", "evaluate_students",
                 "attack_students")
    assert sum(counts[r] for r in gpu_rules) == 22 + 22 + 12 + 158 + 158 + 44 == 416 <= 450


def test_plan_agrees_with_the_dag():
    plan = Plan(load_config(ROOT / "config.yaml"))
    assert len(plan.student_runs()) == 790
    assert {seed for _, _, seed in plan.teacher_runs()} == {0, 1, 2, 3, 4}
    # Every cell of every table is trained for every student seed.
    for d, c, _ in plan.student_runs():
        assert plan.cell(d, c).name == c
    cached = {c.method for d in plan.datasets() for c in plan.cells(d).values() if plan.uses_teacher_logits(c)}
    assert cached == {"hinton", "sr", "mc", "noisy_teacher", "noisy_teacher_kl"}


def test_cache_teacher_logits_off_runs_every_teacher_live():
    config = load_config(ROOT / "config.yaml")
    config["train"]["cache_teacher_logits"] = False
    plan = Plan(config)
    assert plan.logit_teachers() == []
    assert not any(plan.uses_teacher_logits(c) for d in plan.datasets() for c in plan.cells(d).values())


@pytest.mark.parametrize("target", sorted(reports()))
def test_each_table_and_figure_builds_only_what_it_needs(target):
    config = load_config(ROOT / "config.yaml", ROOT / "presets" / "demo.yaml")
    plan = Plan(config)
    counts = dry_run(target, "--configfile", "presets/demo.yaml")
    needed = report_inputs(plan, target)
    cell_of = lambda p: p.rsplit("/", 2)[0]  # noqa: E731 (students/<dataset>/<cell>)
    evals = {cell_of(p) for p in needed if p.endswith("/eval.parquet") and "/students/" in p}
    attacks = {cell_of(p) for p in needed if p.endswith("/attack.parquet")}
    assert counts.get("evaluate_students", 0) == len(evals)  # one job per cell, all its seeds
    assert counts.get("attack_students", 0) == len(attacks)
    assert "aggregate" not in counts  # the global aggregate is not needed for one table
    assert counts[target] == 1


def test_demo_dag_covers_every_table_and_figure():
    counts = dry_run("all_tables", "--configfile", "presets/demo.yaml")
    assert counts["table"] == 9 and counts["figure"] == 4 and counts["scorecard"] == 1
    assert counts["train_teachers"] == 4  # plain, p0.1, p0.3, lc0.3, each for its 3 teacher seeds


def test_lint_is_clean():
    proc = snakemake("--lint", check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_snakefmt_check_passes():
    proc = subprocess.run([str(BIN / "snakefmt"), "--check", "Snakefile", "rules"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


BAD_CONFIGS = [
    ({"experiments": {"table1": {"datasets": ["cifar10"], "methods": ["hintn"], "ft_dropout": [0.1]}}},
     "experiments.table1.methods[0]"),
    ({"experiments": {"soft_randomization": {"datasets": ["cifar10"], "sigma": [-0.1]}}},
     "experiments.soft_randomization.sigma[0]"),
    ({"experiments": {"messy_collaboration": {"datasets": ["svhn"], "label_corruption": [1.5], "mc_rate": [0.1]}}},
     "experiments.messy_collaboration.label_corruption[0]"),
    ({"method_params": {"alpha": 1.2}}, "method_params.alpha"),
    ({"seeds": {"teacher": [], "student": [0]}}, "seeds.teacher"),
    ({"datasets": {"cifar10": {"source": "imagenet", "augmentation": {}}}}, "datasets.cifar10"),
    ({"train": {"epochs": 10, "milestones": [5, 12]}}, "train.milestones"),
    ({"tran": {"epochs": 1}}, "tran"),
    ({"linear_study": {"dd": 3}}, "linear study config key 'dd'"),
]


@pytest.mark.reliability
@pytest.mark.parametrize("override,key", BAD_CONFIGS)
def test_bad_config_is_refused_naming_the_key(tmp_path, override, key):
    """What the Snakefile runs at parse time (the next test shows it does), in-process: seconds, not minutes."""
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(override))
    with pytest.raises(NoiseKDError) as error:
        config = load_config(ROOT / "config.yaml", path)
        check_config(config)
        Plan(config)
    assert key in str(error.value) and "\n" not in str(error.value)


@pytest.mark.reliability
@pytest.mark.parametrize("override,key", [BAD_CONFIGS[0], BAD_CONFIGS[-1]])  # the schema's check, the plan's
def test_bad_config_fails_the_dry_run_at_parse_time_naming_the_key(tmp_path, override, key):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(override))
    proc = snakemake("-n", "--cores", "1", "--configfile", str(path), check=False, timeout=120)
    assert proc.returncode != 0
    message = proc.stdout + proc.stderr
    assert key in message, message[-2000:]


@pytest.mark.reliability
def test_missing_key_is_named():
    config = load_config(ROOT / "config.yaml")
    del config["train"]["epochs"]
    with pytest.raises(NoiseKDError, match="config key train.epochs is missing"):
        check_config(config)


@pytest.mark.reliability
def test_feature_mimicry_with_mismatched_widths_is_refused_at_parse_time():
    config = load_config(ROOT / "config.yaml", ROOT / "presets" / "demo.yaml")
    config["teacher"]["width"] = 2
    with pytest.raises(NoiseKDError, match="need the same width"):
        Plan(config)


def test_a_table_without_cells_is_not_built_and_asking_for_it_names_the_key():
    config = load_config(ROOT / "config.yaml", ROOT / "presets" / "demo.yaml")
    config["experiments"]["soft_randomization"]["table4_sigma"] = {"digits": []}
    plan = Plan(config)
    assert "table4" not in report_names(plan, "table") and "table5" in report_names(plan, "table")
    with pytest.raises(NoiseKDError, match="table4 needs experiments.soft_randomization.table4_sigma"):
        report_inputs(plan, "table4")


def test_conda_env_pins_agree_with_pyproject():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "envs" / "noisekd.yaml").read_text())
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    assert sorted(project) == sorted(pip)  # and no path: jobs import noisekd from the checkout


def test_rulegraph_renders():
    proc = snakemake("--rulegraph", "mermaid-js", "all_tables", "--configfile", "presets/demo.yaml")
    assert "train_students" in proc.stdout and "train_teachers" in proc.stdout


def test_the_snakefile_parses_and_plans_without_torch(tmp_path):
    """Planning the DAG (Snakefile, rules, noisekd.plan) imports no torch: a torch that fails on import
    first on PYTHONPATH does not stop the paper-scale dry run."""
    broken = tmp_path / "torch"
    broken.mkdir()
    (broken / "__init__.py").write_text('raise ImportError("planning imported torch")\n')
    proc = snakemake("-n", "--cores", "1", "all_tables", env={"PYTHONPATH": str(tmp_path)})
    assert "train_students" in proc.stdout


def test_snakemake_without_a_target_builds_every_table():
    counts = job_counts(snakemake("-n", "--cores", "1").stdout)
    assert counts["default"] == 1 and counts["train_students"] == 86 + 72 and counts["table"] == 9
