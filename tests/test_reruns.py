"""A config edit reruns exactly what it changes, and the tables refuse results of other settings.

Each test edits one key of the completed `ci` run (the shared `local_run`) and asks Snakemake, in a
dry run, which jobs it would run; the expected jobs are written out from what each method, table and
rule reads, not derived from the plan's settings.  The printed counts are the acceptance figures.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_workflow import ROOT, snakemake

from noisekd.config import load_config
from noisekd.evaluate import SETTINGS_METADATA_KEY
from noisekd.plan import Plan, report_inputs, reports

pytestmark = pytest.mark.slow

# The ci preset's student cells by what they read (from the methods' published losses: Eq. 1 and the
# losses of AT, RKD, GA, feature mimicry and Noisy Teacher), and its tables by the files they read.
TAU_CELLS = {"hinton", "ft_p0.3", "rkd_da+hinton", "rkd_da+ft_p0.3", "sr_s0.1", "mc_r0.2", "hinton_lc0.3",
             "mc_r0.2_lc0.3", "noisy_teacher_kl_ns0.5_nr0.5"}
NO_TAU_CELLS = {"baseline", "at", "rkd_da", "ga_s0.1", "baseline_lc0.3", "feature_mimicry_s0.1",
                "noisy_teacher_ns0.5_nr0.5"}
ATTACKED = {"ga_s0.1", "sr_s0.1", "feature_mimicry_s0.1", "noisy_teacher_ns0.5_nr0.5", "noisy_teacher_kl_ns0.5_nr0.5"}
READ_ATTACKS = {"table4", "table5", "table_s1", "table_related", "figure2"}
READ_EVALS = {"table1", "table2", "table3", "table_s2_s3", "table_s4", "table_related", "figure3", "figure4", "figure5"}
READ_TEACHERS = {"table1", "table_s2_s3", "table_s4", "figure4", "figure5"}
TEACHER_KINDS = {"plain", "p0.3", "lc0.3"}
CACHED_KINDS = {"plain", "lc0.3"}  # kinds whose logits table some cell reads (Hinton, SR, MC, Noisy Teacher)
LIVE = {"at": "plain", "ft_p0.3": "p0.3", "rkd_da": "plain", "rkd_da+hinton": "plain", "rkd_da+ft_p0.3": "p0.3",
        "feature_mimicry_s0.1": "plain"}  # cells whose students run the selected teacher itself
CACHED = {"hinton": "plain", "sr_s0.1": "plain", "mc_r0.2": "plain", "hinton_lc0.3": "lc0.3",
          "mc_r0.2_lc0.3": "lc0.3", "noisy_teacher_ns0.5_nr0.5": "plain", "noisy_teacher_kl_ns0.5_nr0.5": "plain"}


def planned_jobs(local_run: Path, *overrides: Path) -> set[tuple[str, str]]:
    """(rule, job name) of every job a dry run of all_tables would run, the name from its first output."""
    proc = snakemake("all_tables", "-n", "--cores", "2", "--configfile", "presets/ci.yaml",
                     str(local_run.parent / "local.yaml"), *map(str, overrides))
    jobs, rule, output = set(), None, ""
    for line in proc.stdout.splitlines() + [""]:
        if rule and not line.startswith("    "):  # the end of a job's block
            jobs.add((rule, _name(rule, output, local_run)))
            rule, output = None, ""
        head = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):$", line)
        if head:
            rule = head.group(1)
        elif rule and line.startswith("    output: "):
            output = line.split(": ", 1)[1].split(", ")[0]
    return jobs


def _name(rule: str, output: str, root: Path) -> str:
    parts = Path(output).relative_to(root).parts if output else ()
    if parts and parts[0] in ("students", "teachers"):
        return parts[2]  # students/<dataset>/<cell>/... or teachers/<dataset>/<kind>/...
    if rule in ("table", "figure"):
        return Path(output).stem
    return rule


def _override(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edit.yaml"
    path.write_text(text)
    return path


def _report(edit: str, jobs: set) -> None:
    counts = Counter(rule for rule, _ in jobs)
    print(f"{edit}: {len(jobs)} jobs {dict(sorted(counts.items()))}")


def _consumers(cells: set[str]) -> set[tuple[str, str]]:
    """Training, evaluation and attack jobs of `cells`."""
    jobs = {("train_students", c) for c in cells} | {("evaluate_students", c) for c in cells}
    return jobs | {("attack_students", c) for c in cells & ATTACKED}


def _reports(names: set[str]) -> set[tuple[str, str]]:
    jobs = {("table" if n.startswith("table") else "figure", n) for n in names}
    return jobs | {("aggregate", "aggregate"), ("scorecard", "scorecard"), ("all_tables", "all_tables")}


def test_tau_reruns_the_students_that_use_it_and_what_shows_them(local_run, tmp_path):
    jobs = planned_jobs(local_run, _override(tmp_path, "method_params: {tau: 2.0}\n"))
    _report("method_params.tau", jobs)
    assert jobs == _consumers(TAU_CELLS) | _reports(READ_EVALS | READ_ATTACKS)
    assert not {c for rule, c in jobs if rule == "train_students"} & NO_TAU_CELLS


def test_epochs_rerun_teachers_and_everything_downstream(local_run, tmp_path):
    jobs = planned_jobs(local_run, _override(tmp_path, "train: {epochs: 3, milestones: [1]}\n"))
    _report("train.epochs", jobs)
    teachers = {(rule, k) for k in TEACHER_KINDS for rule in ("train_teachers", "select_teacher", "evaluate_teacher")}
    logits = {("teacher_logits", k) for k in CACHED_KINDS}
    assert jobs == teachers | logits | _consumers(TAU_CELLS | NO_TAU_CELLS) | _reports(READ_EVALS | READ_ATTACKS)


def test_pgd_steps_rerun_only_the_attacks_and_what_reads_them(local_run, tmp_path):
    jobs = planned_jobs(local_run, _override(tmp_path, "evaluation: {pgd: {steps: 4}}\n"))
    _report("evaluation.pgd.steps", jobs)
    assert jobs == {("attack_students", c) for c in ATTACKED} | _reports(READ_ATTACKS)


def test_corruption_seed_reruns_the_corruption_set_and_the_evaluations(local_run, tmp_path):
    jobs = planned_jobs(local_run, _override(tmp_path, "datasets: {digits: {corruptions: {seed: 1}}}\n"))
    _report("datasets.digits.corruptions.seed", jobs)
    evaluations = {("evaluate_students", c) for c in TAU_CELLS | NO_TAU_CELLS}
    evaluations |= {("evaluate_teacher", k) for k in TEACHER_KINDS}
    assert jobs == {("prepare_corruptions", "prepare_corruptions")} | evaluations | _reports(READ_EVALS)


def test_selection_rule_reruns_only_where_the_selected_seed_changes(local_run, tmp_path):
    by_rule = {k: json.loads((local_run / "teachers" / "digits" / k / "best.json").read_text())["selected"]
               for k in TEACHER_KINDS}
    changed = {k for k, s in by_rule.items() if s["test"]["seed"] != s["validation"]["seed"]}
    print(f"kinds whose selected seed changes from test to validation: {sorted(changed)}")
    jobs = planned_jobs(local_run, _override(tmp_path, "teacher_selection: {by: validation}\n"))
    _report("teacher_selection.by", jobs)
    cells = {c for c, k in {**LIVE, **CACHED}.items() if k in changed}
    expected = {("evaluate_teacher", k) for k in TEACHER_KINDS}  # its rows hold every seed's selection accuracy
    expected |= {("teacher_logits", k) for k in changed & CACHED_KINDS} | _consumers(cells)
    plan = Plan(load_config(ROOT / "config.yaml", ROOT / "presets" / "ci.yaml", local_run.parent / "local.yaml"))
    showing = {name for name in reports() if any(f"/{c}/" in path for c in cells for path in report_inputs(plan, name))}
    assert jobs == expected | _reports(READ_TEACHERS | showing)
    assert not {j for j in jobs if j[0] in ("train_teachers", "select_teacher")}


@pytest.mark.parametrize("edit", ["train: {compile: true}\n", "train: {checkpoint_interval_s: 5}\n",
                                  "resources: {threads: 2}\n", "evaluation: {batch_size: 7}\n",
                                  "train: {cache_teacher_logits: true, cuda_graphs: false, teacher_stream: false}\n"])
def test_a_speed_only_key_reruns_nothing(local_run, tmp_path, edit):
    jobs = planned_jobs(local_run, _override(tmp_path, edit))
    _report(edit.strip(), jobs)
    assert jobs == set()


def _copy_run(local_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the completed run (files and times) in a new results folder, with its config file."""
    results = tmp_path / "copy"
    shutil.copytree(local_run, results)
    config = tmp_path / "copy.yaml"
    config.write_text(f"results_dir: {results}\n")
    return results, config


def test_a_result_file_of_other_settings_stops_the_table_naming_it(local_run, tmp_path):
    results, config = _copy_run(local_run, tmp_path)
    target = results / "students" / "digits" / "hinton" / "seed0" / "eval.parquet"
    table = pq.read_table(target)
    settings = json.loads(table.schema.metadata[SETTINGS_METADATA_KEY])
    settings["student"]["method_params"]["tau"] = 2.0  # as another config (or an older run) computed it
    metadata = {**table.schema.metadata, SETTINGS_METADATA_KEY: json.dumps(settings).encode()}
    pq.write_table(table.replace_schema_metadata(metadata), target)
    proc = snakemake(str(results / "tables" / "table1.md"), "--forcerun", str(results / "tables" / "table1.md"),
                     "--cores", "1", "--configfile", "presets/ci.yaml", str(config), check=False)
    assert proc.returncode != 0
    errors = [line for line in (results / "logs" / "table" / "table1.log").read_text().splitlines() if "error:" in line]
    print(errors[-1])
    assert len(errors) == 1 and f"{target} was computed with student.method_params.tau = 2.0" in errors[0]
    assert "this config expects 4.0" in errors[0]
    assert not (results / "tables" / "table1.md").exists()  # no half-written table


def test_results_left_stale_by_mtime_only_reruns_are_refused(local_run, tmp_path):
    """`--rerun-triggers mtime` ignores a changed tau; the tables then refuse the stale students."""
    results, config = _copy_run(local_run, tmp_path)
    tau = _override(tmp_path, "method_params: {tau: 2.0}\n")
    proc = snakemake("all_tables", "--rerun-triggers", "mtime", "--cores", "2", "--configfile", "presets/ci.yaml",
                     str(config), str(tau), "--forcerun", str(results / "tables" / "table3.md"), check=False)
    assert proc.returncode != 0
    line = next(line for line in (results / "logs" / "table" / "table3.log").read_text().splitlines()
                if "error:" in line)
    print(line)
    assert re.search(r"students/digits/sr_s0\.1/seed0/eval\.parquet was computed with "
                     r"student\.method_params\.tau = 4\.0, but this config expects 2\.0", line)
