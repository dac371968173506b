"""Ready for a GPU cluster: the SLURM profiles (production and CI) and the jobs' resources (time limits
from the epochs, growth with each retry, CPUs per GPU job)."""

import dataclasses
import json
import re
import subprocess
import sys

import pytest
import yaml
from test_workflow import ROOT

from noisekd import resources
from noisekd.config import check_config, load_config
from noisekd.errors import NoiseKDError

PRODUCTION = ROOT / "slurm" / "config.yaml"
CI = ROOT / ".ci" / "slurm" / "profile" / "config.yaml"


def _profile(path) -> dict:
    return yaml.safe_load(path.read_text())


def _commented_set_resources() -> dict:
    """The production profile's commented per-rule example, uncommented."""
    lines = PRODUCTION.read_text().splitlines()
    start = lines.index("# set-resources:")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line[2:] if line.startswith("# ") else line[1:])
    return yaml.safe_load("\n".join(block))


def _plugin_options() -> set[str]:
    from snakemake_executor_plugin_slurm import ExecutorSettings

    return {"slurm-" + f.name.replace("_", "-") for f in dataclasses.fields(ExecutorSettings)}


def _parsed(*profiles, extra=()):
    """The arguments Snakemake takes from these profiles (what `snakemake --profile ...` would run with)."""
    from snakemake.cli import parse_args

    argv = [a for p in profiles for a in ("--profile", str(ROOT / p))]
    _, args = parse_args([*argv, "-n", *extra, "all_tables"])
    return args


def test_production_profile_keeps_going_shows_failed_logs_and_lets_the_plugin_pick_status_checks():
    profile = _profile(PRODUCTION)
    assert profile["executor"] == "slurm"
    assert profile["keep-going"] is True and profile["show-failed-logs"] is True
    assert profile["retries"] >= 1 and profile["rerun-incomplete"] is True and profile["latency-wait"] >= 30
    # no forced status command: sacct where it is installed, squeue otherwise (the plugin's own choice)
    assert "slurm-status-command" not in profile
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,50}", profile["slurm-jobname-prefix"])  # what the plugin accepts
    # only options the installed plugin has (snakemake would refuse an unknown one)
    assert {k for k in profile if k.startswith("slurm-")} <= _plugin_options()
    # the per-rule example is a comment, not a setting: no site's partition or GPU model is imposed
    assert "set-resources" not in profile
    assert "slurm_partition" not in profile["default-resources"] and "gpu_model" not in profile["default-resources"]


def test_the_commented_per_rule_example_is_valid_once_uncommented(tmp_path):
    from snakemake_executor_plugin_slurm.validation import validate_slurm_extra

    example = _commented_set_resources()["set-resources"]
    smk = "".join(p.read_text() for p in (ROOT / "rules").glob("*.smk"))
    rules = set(re.findall(r"^(?:rule|checkpoint) (\w+):", smk, re.M))
    assert set(example) <= rules, set(example) - rules
    keys = {k for settings in example.values() for k in settings}
    assert {"slurm_partition", "gpu_model", "constraint", "slurm_extra"} <= keys
    for rule, settings in example.items():  # the plugin refuses flags it sets itself inside slurm_extra
        if "slurm_extra" in settings:
            validate_slurm_extra(type("Job", (), {"resources": {"slurm_extra": eval(settings["slurm_extra"])}})())
    site = tmp_path / "site"
    site.mkdir()
    (site / "config.yaml").write_text(yaml.safe_dump({"set-resources": example}))
    args = _parsed("slurm", site)
    context = {"wildcards": {}, "input": [], "attempt": 1, "threads": 1, "rulename": "train_teachers",
               "async_run": None}
    teachers = {k: r.evaluate(**context).value for k, r in args.set_resources["train_teachers"].items()}
    assert teachers["slurm_partition"] == "gpu" and teachers["gpu_model"] == "a100"
    assert args.keep_going is True  # stacked on the production profile, which still applies


def test_ci_profile_stacks_the_ci_clusters_needs_on_the_production_profile():
    ci = _profile(CI)
    assert ci == {"slurm-status-command": "squeue", "slurm-init-seconds-before-status-checks": 10,
                  "slurm-keep-successful-logs": True}
    assert set(ci) <= _plugin_options()
    args = _parsed("slurm", CI.parent, extra=("--jobs", "4"))
    assert args.slurm_status_command == "squeue" and args.slurm_init_seconds_before_status_checks == 10
    assert args.slurm_keep_successful_logs is True
    # everything else comes from the production profile
    assert args.executor == "slurm" and args.keep_going is True and args.show_failed_logs is True
    assert args.slurm_jobname_prefix == _profile(PRODUCTION)["slurm-jobname-prefix"] and args.retries == 1
    # ... and the SLURM end-to-end test runs with both
    from test_e2e import SLURM_PROFILES

    assert SLURM_PROFILES == ("--profile", "slurm", "--profile", str(CI.parent.relative_to(ROOT)))


# -- resources ----------------------------------------------------------------------------------------

PAPER = load_config(ROOT / "config.yaml")["resources"]


def test_time_and_memory_grow_with_each_attempt():
    first = resources.train_runtime_min(PAPER, 200, 5, 1)
    assert [resources.train_runtime_min(PAPER, 200, 5, a) for a in (1, 2, 3)] == [first, 2 * first, 3 * first]
    assert [resources.per_attempt(PAPER, "train_mem_mb", a) for a in (1, 2, 3)] == [16000, 32000, 48000]
    for key in ("eval_runtime_min", "attack_runtime_min", "data_runtime_min", "data_mem_mb"):
        one = resources.per_attempt(PAPER, key, 1)
        assert [resources.per_attempt(PAPER, key, a) for a in (1, 2, 3)] == [one, 2 * one, 3 * one] and one > 0


def test_training_time_limit_follows_the_epochs_and_seeds():
    per_epoch = {**PAPER, "train_overhead_min": 0}
    assert resources.train_runtime_min(per_epoch, 400, 5) == 2 * resources.train_runtime_min(per_epoch, 200, 5)
    assert resources.train_runtime_min(per_epoch, 200, 10) == 2 * resources.train_runtime_min(per_epoch, 200, 5)
    # the documented paper numbers: 200 epochs x 5 seeds x 0.1 min + 15 min
    assert resources.train_runtime_min(PAPER, 200, 5) == 115 and resources.train_runtime_min(PAPER, 350, 5) == 190
    # whole minutes, rounded up; keys a config leaves out fall back to noisekd.resources.DEFAULTS
    assert resources.train_runtime_min({"train_min_per_epoch": 0.01, "train_overhead_min": 0}, 3, 1) == 1
    assert resources.train_runtime_min({}, 200, 5) == 115 and resources.setting({}, "threads") == 8


# What Snakemake computes for a rule's job: its resource callables, evaluated with wildcards and attempt.
RULE_RESOURCES = r"""
import json, sys
from pathlib import Path
from types import SimpleNamespace
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

root, configfiles, queries = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:-1]], json.loads(sys.argv[-1])
out = []
with SnakemakeApi(OutputSettings()) as api:
    workflow = api.workflow(resource_settings=ResourceSettings(cores=64),
                            config_settings=ConfigSettings(configfiles=configfiles),
                            snakefile=root / "Snakefile", workdir=root)._workflow
    for rule, wildcards, attempt in queries:
        res = workflow.get_rule(rule).resources
        value = lambda key: res[key].evaluate(SimpleNamespace(**wildcards), attempt=attempt).value
        out.append({"runtime": value("runtime"), "mem_mb": value("mem_mb"), "threads": value("_cores")})
print("RESULT " + json.dumps(out))
"""


def rule_resources(configfiles, queries) -> list[dict]:
    args = [sys.executable, "-c", RULE_RESOURCES, str(ROOT), *map(str, configfiles), json.dumps(queries)]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT ", 1)[1])


def test_the_rules_resources_follow_epochs_and_attempt(tmp_path):
    teacher = ["train_teachers", {"dataset": "svhn", "kind": "plain"}]
    student = ["train_students", {"dataset": "cifar10", "cell": "hinton"}]
    fickle = ["train_students", {"dataset": "cifar10", "cell": "ft_p0.5"}]  # fickle_schedules: 350 epochs
    others = [["evaluate_students", {"dataset": "cifar10", "cell": "hinton"}],
              ["attack_students", {"dataset": "cifar10", "cell": "sr_s0.05"}],
              ["prepare_corruptions", {"dataset": "cifar10"}]]
    queries = [[*job, attempt] for job in (teacher, student, fickle, *others) for attempt in (1, 2, 3)]
    doubled = tmp_path / "doubled.yaml"
    doubled.write_text("train: {epochs: 400}\n")
    paper, twice = rule_resources([ROOT / "config.yaml"], queries), rule_resources([doubled], queries[:9])

    def runtimes(rows, job):
        return [r["runtime"] for r in rows[3 * job:3 * job + 3]]

    assert runtimes(paper, 0) == [115, 230, 345] and runtimes(paper, 1) == [115, 230, 345]
    assert runtimes(paper, 2) == [190, 380, 570]
    assert [r["mem_mb"] for r in paper[:3]] == [16000, 32000, 48000]
    assert {r["threads"] for r in paper[:9]} == {PAPER["threads"]} == {8}  # CPUs per GPU job
    assert runtimes(paper, 3) == [120, 240, 360] and runtimes(paper, 4) == [360, 720, 1080]
    assert runtimes(paper, 5) == [120, 240, 360] and [r["mem_mb"] for r in paper[15:]] == [16000, 32000, 48000]
    # doubling train.epochs doubles the epochs' share of the teachers' and students' limits (the 15 min of
    # train_overhead_min stay), not the Fickle Teacher students' (their own schedule, fickle_schedules)
    overhead = [PAPER["train_overhead_min"] * a for a in (1, 2, 3)]
    for job in (0, 1):
        assert [t - o for t, o in zip(runtimes(twice, job), overhead)] == [
            2 * (t - o) for t, o in zip(runtimes(paper, job), overhead)]
    assert runtimes(twice, 2) == runtimes(paper, 2)


@pytest.mark.reliability
@pytest.mark.parametrize("override,key", [
    ({"train_min_per_epoch": 0}, "config key resources.train_min_per_epoch"),
    ({"threads": 0}, "config key resources.threads"),
    ({"data_mem_mb": "lots"}, "config key resources.data_mem_mb"),
    ({"train_runtime_min": 720}, "resources.train_runtime_min was replaced by resources.train_min_per_epoch"),
    ({"train_min_per_epch": 0.1}, "config key resources.train_min_per_epch is not a known setting"),
])
def test_bad_resources_are_refused_naming_the_key(override, key):
    config = load_config(ROOT / "config.yaml")
    config["resources"].update(override)
    with pytest.raises(NoiseKDError) as error:
        check_config(config)
    assert key in str(error.value) and "\n" not in str(error.value)
