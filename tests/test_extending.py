"""Extending the pipeline: a new method is one registry entry, a new table one registered function.

A toy method, registered by a fixture only, goes through the config check, the plan, a Snakemake dry
run (in this process, so it sees the registry), one training epoch and a row of Table 1 without any
other module knowing it.
"""

from __future__ import annotations

import contextlib
import io

import pytest
import yaml
from test_workflow import ROOT

from noisekd import jobs, pipeline
from noisekd.config import check_config, load_config
from noisekd.methods import METHODS, Method, MethodParams, register
from noisekd.paper import TABLES, cell_label
from noisekd.plan import REPORTS, Plan, report_context, report_inputs, report_names, reports, table
from noisekd.settings import Runtime
from noisekd.tables import Column, Row, Stat, Table, TableCell

RUNTIME = Runtime(threads=1)


@pytest.fixture
def toy_method():
    """Hinton KD with the soft term at half its weight: not the paper's, known only while the test runs."""
    method = register(Method("toy", "Toy KD", "Hinton KD at half the soft-target weight",
                             lambda p: {"ce": 1 - p.alpha / 2, "kd": p.alpha / 2}, teacher=True))
    yield method
    del METHODS["toy"]


def _toy_config(tmp_path) -> tuple[dict, str]:
    override = {"results_dir": str(tmp_path / "results"), "train": {"epochs": 1, "milestones": []},
                "experiments": {"table1": {"datasets": ["digits"], "methods": ["toy"], "ft_dropout": []}}}
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(override))
    return load_config(ROOT / "config.yaml", ROOT / "presets" / "ci.yaml", path), str(path)


def _dry_run_in_process(*args: str) -> str:
    """A Snakemake dry run in this process, so that the Snakefile's plan sees this process's registry."""
    from snakemake.cli import main

    out = io.StringIO()
    with contextlib.redirect_stderr(out), contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        main(["-n", "--cores", "1", *args])
    assert done.value.code == 0, out.getvalue()[-3000:]
    return out.getvalue()


def test_a_registered_method_goes_from_the_config_to_a_table_row(toy_method, tmp_path):
    config, config_file = _toy_config(tmp_path)
    check_config(config)  # the schema's method names come from the registry
    plan = Plan(config)
    assert plan.tables["table1"]["digits"].cells == ("toy",)
    assert plan.uses_teacher_logits(plan.cell("digits", "toy"))  # CE and KD only: a logits table serves it
    assert plan.student_settings("digits", "toy")["student"]["method_params"] == {"alpha": 0.9, "tau": 4.0}

    dry = _dry_run_in_process("table1", "--configfile", "presets/ci.yaml", config_file)
    assert "students/digits/toy/seed0/model.pt" in dry and "rule teacher_logits:" in dry

    # One epoch of a plain teacher, its selection and logits table, then one epoch of the toy student.
    data = {split: str(tmp_path / f"{split}.npz") for split in ("train", "val", "test")}
    pipeline.prepare_dataset(plan.settings("prepare_dataset", dataset="digits"), RUNTIME, data)
    teachers = [{"model": str(tmp_path / f"t{s}" / "model.pt"), "summary": str(tmp_path / f"t{s}" / "summary.json")}
                for s in plan.teacher_seeds]
    pipeline.train_teachers(plan.teacher_settings("digits", "plain"), plan.teacher_seeds, data, teachers, RUNTIME)
    pipeline.select_teacher([t["summary"] for t in teachers], str(tmp_path / "best.json"))
    seed = pipeline.selection.selected_seed(tmp_path / "best.json", "test")
    logits = str(tmp_path / "train_logits.pt")
    pipeline.compute_teacher_logits(plan.teacher_settings("digits", "plain"), seed,
                                    {"model": teachers[seed]["model"], "train": data["train"]}, logits, RUNTIME)
    student = {"model": str(tmp_path / "s" / "model.pt"), "summary": str(tmp_path / "s" / "summary.json")}
    settings = plan.student_settings("digits", "toy")
    pipeline.train_students(settings, [0], {"train": data["train"], "teacher_logits": logits}, [student], RUNTIME)

    # Its evaluation and the selected teacher's, then Table 1.
    eval_settings = plan.student_eval_settings("digits", "toy", 0)
    identity = pipeline.student_identity(eval_settings, "digits", "toy", student["summary"])
    pipeline.evaluate_model(eval_settings, identity, student["model"], {"test": data["test"]},
                            str(tmp_path / "eval.parquet"), RUNTIME)
    pipeline.evaluate_teacher(plan.teacher_eval_settings("digits", "plain"), "digits", "plain", seed,
                              {"selection": str(tmp_path / "best.json"), "model": teachers[seed]["model"],
                               "test": data["test"]}, str(tmp_path / "teacher.parquet"), RUNTIME)
    frame = jobs._read_rows([str(tmp_path / "eval.parquet"), str(tmp_path / "teacher.parquet")])
    table = TABLES["table1"](frame, report_context(plan, "table1"))
    assert [row.index[0] for row in table.rows] == ["Toy KD"]
    cell = table.cell("Toy KD", "Digits / Test Acc.")
    assert cell.stat.n == 1 and 0 < cell.stat.mean <= 1
    assert MethodParams().alpha == 0.9  # the registry entry changed nothing else


def test_a_method_naming_an_unknown_loss_term_is_refused():
    from noisekd.errors import NoiseKDError

    with pytest.raises(NoiseKDError, match=r"method bad names unknown loss terms \['kl'\]"):
        register(Method("bad", "Bad", "a typo in a loss term", lambda p: {"kl": 1.0}))
    assert "bad" not in METHODS


@pytest.fixture
def toy_table():
    """A table the paper does not have, added as one registered function (this fixture is the whole diff)."""

    @table("toy_table", experiment="table1", reads={"eval"})
    def build(frame, ctx):
        """Test accuracy of Table 1's cells, one row each."""
        rows = []
        for dataset, layout in ctx.tables["table1"].items():
            for name in layout.cells:
                values = frame.loc[(frame.role == "student") & (frame.dataset == dataset) & (frame.cell == name)
                                   & (frame.metric == "test_acc"), "value"]
                stat = Stat(float(values.mean()), float(values.std()), len(values))
                rows.append(Row((cell_label(ctx.cell(dataset, name)),), [TableCell(stat)], dataset))
        return Table("toy_table", "Toy: test accuracy", "Mean ± std over the student seeds.", ("Method",),
                     [Column("Test Acc.")], rows)

    yield build
    del REPORTS["toy_table"]


def test_a_registered_table_is_a_target_that_reads_only_its_runs(toy_table, tmp_path):
    from test_report import make_plan, synth

    plan = make_plan("demo")
    assert "toy_table" in report_names(plan, "table")
    evals = [p for p in report_inputs(plan, "table1") if "/students/" in p]
    assert report_inputs(plan, "toy_table") == evals  # Table 1's students, not its teachers
    built = reports()["toy_table"].build(synth(plan), report_context(plan, "toy_table"))
    assert [r.index[0] for r in built.rows][:3] == ["Baseline", "Hinton", "AT"] and built.to_csv().count("\n") == 10

    dry = _dry_run_in_process("toy_table", "--configfile", "presets/demo.yaml", "--forceall")
    assert "toy_table" in dry and "students/digits/ft_p0.3/seed1/eval.parquet" in dry
    assert "attack_students" not in dry  # it reads no attacks
