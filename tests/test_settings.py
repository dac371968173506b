"""Each job's settings (its rule params), the results layout, and how stale results are recognised."""

import json

import pytest
from test_workflow import ROOT

from noisekd import lineage, selection
from noisekd.config import load_config
from noisekd.errors import NoiseKDError
from noisekd.layout import Layout
from noisekd.plan import SETTINGS_BLOCKS, Plan, report_context, report_files
from noisekd.settings import Runtime, TrainConfig


@pytest.fixture(scope="module")
def paper():
    return Plan(load_config(ROOT / "config.yaml"))


def test_student_settings_hold_what_the_paper_says_decides_the_student(paper):
    ft = paper.settings("train_students", dataset="cifar10", cell="ft_p0.4")
    assert ft["student"]["train"]["epochs"] == 350 and ft["student"]["train"]["milestones"] == [105, 210, 280]  # §4.1
    assert ft["teacher"]["network"] == {"depth": 40, "width": 2, "dropout": 0.4}
    assert ft["teacher"]["train"]["epochs"] == 200  # the teacher keeps the base schedule
    assert ft["student"]["method_params"] == {"alpha": 0.9, "tau": 4.0, "dropout": 0.4}
    assert paper.settings("train_students", dataset="cifar10", cell="baseline")["student"]["method_params"] == {}
    assert paper.settings("train_students", dataset="cifar10", cell="baseline")["teacher"] is None
    sr = paper.settings("train_students", dataset="svhn", cell="sr_s0.2")
    assert sr["student"]["method_params"] == {"alpha": 0.9, "tau": 4.0, "sigma": 0.2, "clip_noisy_input": False}
    assert sr["student"]["augmentation"] == {"crop_padding": 4, "hflip": False}  # SVHN digits are not flipped
    mc = paper.settings("train_students", dataset="cifar10", cell="mc_r0.3_lc0.2")
    assert mc["labels"] == {"rate": 0.2, "seed": 0} and mc["student"]["method_params"]["mc_rate"] == 0.3
    assert paper.settings("train_teachers", dataset="cifar10", kind="lc0.2")["labels"] == mc["labels"]


def test_data_and_evaluation_settings(paper):
    assert paper.settings("prepare_dataset", dataset="cifar10") == {"data": {"source": "cifar10", "holdout": None}}
    ev = paper.settings("evaluate_students", dataset="cifar10", cell="hinton")
    assert "seed" not in ev  # one job evaluates every seed; each seed's file records its own
    assert paper.student_eval_settings("cifar10", "hinton", 3) == {**ev, "seed": 3}
    assert ev["evaluation"] == {"ood": {"source": "cinic10", "split": "test", "per_class": 2100, "seed": 0},
                                "corruptions": {"source": "released"}}  # the released files have no seed
    assert paper.settings("evaluate_students", dataset="svhn", cell="hinton")["evaluation"] == {
        "ood": None, "corruptions": None}
    attack = paper.settings("attack_students", dataset="cifar10", cell="sr_s0.02")["attack"]
    assert paper.attack_settings("cifar10", "sr_s0.02", 4)["seed"] == 4
    assert attack["batch_size"] == 5000 and {"steps": 20, "eps": 8 / 255, "step_size": 0.003, "restarts": 5} in \
        attack["attacks"]
    assert {a["steps"] for a in attack["attacks"]} == {1, 5, 10, 15, 20, 100, 200, 1000}  # Tables 4 (σ 0.02)


def test_every_rule_gives_the_blocks_it_declares(paper):
    jobs = {"prepare_dataset": {"dataset": "cifar10"}, "prepare_ood": {"dataset": "cifar10"},
            "prepare_corruptions": {"dataset": "cifar10"}, "corrupt_labels": {"dataset": "cifar10", "rate": "0.3"},
            "train_teachers": {"dataset": "cifar10", "kind": "p0.3"},
            "teacher_logits": {"dataset": "cifar10", "kind": "plain"},
            "evaluate_teacher": {"dataset": "svhn", "kind": "lc0.1"},
            "train_students": {"dataset": "cifar10", "cell": "at+ft_p0.4"},
            "evaluate_students": {"dataset": "cifar10", "cell": "at"},
            "attack_students": {"dataset": "svhn", "cell": "ga_s0.5"}}
    assert set(jobs) == set(SETTINGS_BLOCKS)
    for rule, wildcards in jobs.items():
        assert tuple(paper.settings(rule, **wildcards)) == SETTINGS_BLOCKS[rule], rule
    with pytest.raises(NoiseKDError, match="rule table has no settings"):
        paper.settings("table", name="table1")


def test_a_train_config_splits_into_settings_and_speed():
    config = TrainConfig(epochs=3, milestones=(1,), compile=True, checkpoint_interval_s=9)
    assert "compile" not in config.numbers() and config.numbers()["milestones"] == [1]
    runtime = Runtime.from_config({"train": {"compile": True, "checkpoint_interval_s": 9, "epochs": 3}})
    assert TrainConfig.from_settings(config.numbers(), runtime.speed, seed=0) == config


def test_selection_by_validation_needs_a_held_out_split():
    config = load_config(ROOT / "config.yaml")
    config["teacher_selection"]["by"] = "validation"
    with pytest.raises(NoiseKDError, match="config key teacher_selection.validation_fraction"):
        Plan(config)
    config["teacher_selection"]["validation_fraction"] = 0.1
    assert Plan(config).data_settings("cifar10")["holdout"] == {"fraction": 0.1, "seed": 0}


def test_selection_keeps_every_rules_seed(tmp_path):
    chosen = selection.select([{"seed": 0, "test_acc": 0.9, "val_acc": 0.7}, {"seed": 1, "test_acc": 0.8, "val_acc": 0.8},
                               {"seed": 2, "test_acc": 0.9, "val_acc": 0.6}])
    assert chosen["selected"]["test"]["seed"] == 0  # ties: the lowest seed
    assert chosen["selected"]["validation"]["seed"] == 1
    path = tmp_path / "best.json"
    path.write_text(json.dumps(selection.select([{"seed": 3, "test_acc": 0.5, "val_acc": None}])))
    assert selection.selected_seed(path, "test") == 3
    with pytest.raises(NoiseKDError, match="no seed selected by validation accuracy"):
        selection.selected_seed(path, "validation")


def test_the_layout_is_the_one_the_rules_use(paper):
    L = Layout("results/x/")
    assert L.student("cifar10", "sr_s0.05", 3, "eval.parquet") == "results/x/students/cifar10/sr_s0.05/seed3/eval.parquet"
    assert L.labels("svhn", 0.3) == L.labels("svhn", "0.3") == "results/x/data/svhn/labels_lc0.3.npz"
    assert L.student("{dataset}", "{cell}", "{seed}", "model.pt") == "results/x/students/{dataset}/{cell}/seed{seed}/model.pt"
    files = report_files(paper, "table1")
    assert all(path.startswith("results/paper/") for path, _, _ in files)
    assert {sel for _, _, sel in files if sel} <= {paper.layout.teacher(d, k, "best.json")
                                                   for d, kinds in paper.teacher_kinds.items() for k in kinds}


def test_a_report_depends_only_on_what_it_shows(paper):
    """Table 1 reads no attacks, so its params (what reruns it) hold none."""
    t1, s1 = report_context(paper, "table1"), report_context(paper, "table_s1")
    assert t1.pgd20 is None and not any(c.attacks for cells in t1.cells.values() for c in cells.values())
    assert s1.pgd20 is not None and any(c.attacks for cells in s1.cells.values() for c in cells.values())


def test_first_difference_names_the_dotted_key():
    found = {"data": {"source": "cifar10"}, "student": {"method_params": {"tau": 4.0}, "train": {"milestones": [1, 2]}}}
    expected = {"data": {"source": "cifar10"}, "student": {"method_params": {"tau": 2.0}, "train": {"milestones": (1, 2)}}}
    assert lineage.first_difference(found, expected) == ("student.method_params.tau", 4.0, 2.0)
    assert lineage.first_difference(found, json.loads(json.dumps(found))) is None
    assert lineage.first_difference({"a": 1}, {"a": 1, "b": 2}) == ("b", "<absent>", 2)
    with pytest.raises(NoiseKDError, match=r"^x.parquet was computed with student.method_params.tau = 4.0, but this "
                                           r"config expects 2.0; rebuild it: snakemake --forcerun x.parquet$"):
        lineage.check("x.parquet", found, expected)
    with pytest.raises(NoiseKDError, match="records no settings"):
        lineage.check("x.parquet", None, expected)


def test_expected_settings_pack_shared_blocks_once(paper):
    files = paper.all_result_files()
    packed = paper.expected(files)
    assert lineage.unpack(packed) == {path: settings for path, settings, _ in files}
    assert len(packed["blocks"]) < len(files) / 5  # a handful of distinct blocks across 1032 files


def test_the_plan_imports_no_torch():
    """Planning (the plan, the layout, the registered tables and figures) loads neither torch nor the
    plotting and data-frame libraries: the dry run stays light."""
    import subprocess
    import sys

    code = ("import sys, noisekd.plan, noisekd.layout, noisekd.lineage, noisekd.selection, noisekd.config; "
            "import noisekd.jobs; assert 'torch' not in sys.modules, 'report jobs import torch'; "
            "noisekd.plan.reports(); heavy = [m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'pandas', 'matplotlib', 'seaborn')]; assert not heavy, sorted(heavy)[:5]")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_no_settings_hold_a_speed_or_location_key(paper):
    """Every settings block of every job is plain JSON, and no speed-only or location key is in any."""
    plan = paper
    banned = {"compile", "cuda_graphs", "teacher_stream", "checkpoint_every", "checkpoint_interval_s", "check_every",
              "cache_teacher_logits", "results_dir", "data_dir", "device", "threads"}

    def keys(obj):
        if isinstance(obj, dict):
            for k, v in obj.items():
                yield k
                yield from keys(v)
        elif isinstance(obj, list):
            for v in obj:
                yield from keys(v)

    for path, settings, _ in plan.all_result_files():
        assert json.loads(json.dumps(settings)) == settings, path
        assert not set(keys(settings)) & banned, path
