"""The whole-paper cost estimate (benchmarks.cost) against hand counts from config.yaml."""

import pytest
from test_workflow import ROOT

from benchmarks.cost import estimate
from noisekd.config import load_config
from noisekd.plan import Plan

RATES = {"teacher": 1000.0, "student": 4000.0, "kd": 2000.0, "inference": 1e12, "pgd_row_steps": 1e12,
         "warmup_s": {"teacher": 0.0, "student": 0.0, "kd": 0.0, "kd_cached": 0.0}}


def test_cached_cells_count_at_the_cached_rate_plus_one_table_per_teacher():
    plan = Plan(load_config(ROOT / "config.yaml"))
    live = estimate(plan, RATES)
    cached = estimate(plan, {**RATES, "kd_cached": 4000.0, "teacher_table": 1000.0})
    # Tables: plain + 5 label-corruption teachers per dataset; CIFAR-10 50 000 images x 162 crops/flips,
    # SVHN 73 257 x 81 (no flips).
    assert cached["jobs"]["teacher_logits"] == 12 and live["jobs"]["teacher_logits"] == 0
    assert cached["seconds"]["teacher_logits"] == pytest.approx(6 * 50_000 * 162 / 1000 + 6 * 73_257 * 81 / 1000)
    # Students: the Hinton/SR/MC/Noisy Teacher cells (CIFAR-10 6 + 10 + 30 + 2 = 48, SVHN 6 + 10 + 30 = 46),
    # 5 seeds x 200 epochs each, move from the kd rate to the kd_cached rate.
    saved = (48 * 50_000 + 46 * 73_257) * 5 * 200 * (1 / 2000 - 1 / 4000)
    assert live["seconds"]["students"] - cached["seconds"]["students"] == pytest.approx(saved)
    assert live["seconds"]["teachers"] == cached["seconds"]["teachers"]


def test_fickle_teacher_cells_count_at_their_own_rate_where_measured():
    plan = Plan(load_config(ROOT / "config.yaml"))
    base = estimate(plan, RATES)
    slow = estimate(plan, {**RATES, "kd_fickle": 1000.0, "warmup_s": {**RATES["warmup_s"], "kd_fickle": 0.0}})
    # FT cells: CIFAR-10 FT-0.1..0.5 (250, 250, 300, 350, 350 epochs) and Table 2's 5 feature+FT cells
    # ("the same experimental setup as for the original methods": 200 epochs); SVHN FT-0.1..0.5.
    epochs = {"cifar10": 250 + 250 + 300 + 350 + 350 + 5 * 200, "svhn": 250 + 250 + 300 + 350 + 350}
    extra = (epochs["cifar10"] * 50_000 + epochs["svhn"] * 73_257) * 5 * (1 / 1000 - 1 / 2000)
    assert slow["seconds"]["students"] - base["seconds"]["students"] == pytest.approx(extra)


def test_dropout_teachers_count_at_their_own_rate_where_measured():
    plan = Plan(load_config(ROOT / "config.yaml"))
    base = estimate(plan, RATES)
    slow = estimate(plan, {**RATES, "teacher_dropout": 500.0, "warmup_s": {**RATES["warmup_s"], "teacher_dropout": 0.0}})
    # Dropout teachers: 0.1..0.5 on CIFAR-10 and on SVHN, 5 seeds x 200 epochs each.
    extra = 5 * (50_000 + 73_257) * 5 * 200 * (1 / 500 - 1 / 1000)
    assert slow["seconds"]["teachers"] - base["seconds"]["teachers"] == pytest.approx(extra)


def _record(**roles):
    step = {"images_per_s": 1000.0, "first_epoch_s": 1.0}
    return {"n": 500, "inference_images_per_s": 1e4, "settings": {"compile": True},
            "ablation": {"no_compile": {"images_per_s": 700.0}},
            **{r: dict(step) for r in ("teacher", "student", "kd")}, **roles}


def test_records_without_the_dropout_steps_name_their_stand_ins():
    from benchmarks.cost import _rates_of

    old = _rates_of(_record())
    assert old["kd_fickle"] == 700.0 and "teacher_dropout" not in old  # counted at the teacher's rate
    assert set(old["stand_ins"]) == {"kd_fickle", "teacher_dropout", "kd_cached", "teacher_table", "kd_features"}
    assert old["kd_cached"] == old["kd_features"] == old["kd"] and old["teacher_table"] == old["teacher"]
    step = {"images_per_s": 900.0, "first_epoch_s": 1.0}
    table = {**step, "teacher_table": {"images_per_s": 5000.0}}
    new = _rates_of(_record(kd_fickle=dict(step), teacher_dropout=dict(step), kd_cached=table, kd_features=dict(step)))
    assert new["kd_fickle"] == new["teacher_dropout"] == new["kd_features"] == 900.0 and new["stand_ins"] == {}
    assert new["teacher_table"] == 5000.0


def test_records_without_logits_tables_still_count_the_tables_as_an_upper_bound():
    from benchmarks.cost import _rates_of

    plan = Plan(load_config(ROOT / "config.yaml"))
    rates = _rates_of(_record())  # teacher 1000 img/s, kd 1000 img/s, no kd_cached
    est = estimate(plan, {**rates, "pgd_row_steps": 1e12})
    assert est["jobs"]["teacher_logits"] == 12  # the workflow builds them whatever the records hold
    assert est["seconds"]["teacher_logits"] == pytest.approx(6 * 50_000 * 162 / 1000 + 6 * 73_257 * 81 / 1000)


def test_feature_method_cells_count_at_their_own_rate_where_measured():
    plan = Plan(load_config(ROOT / "config.yaml"))
    rates = {**RATES, "kd_fickle": 2000.0, "warmup_s": {**RATES["warmup_s"], "kd_fickle": 0.0, "kd_features": 0.0}}
    base = estimate(plan, rates)
    slow = estimate(plan, {**rates, "kd_features": 1000.0})
    # CIFAR-10: Table 2's AT, SP, RKD-D, RKD-A, RKD-DA, alone and +H (10 cells; their +FT cells count at the
    # Fickle Teacher step) and table_related's feature mimicry at sigma 0.05 and 0.2 (2); SVHN: Table 1's
    # AT, SP, RKD-D, RKD-A, RKD-DA (5). 5 seeds x 200 epochs each.
    extra = (12 * 50_000 + 5 * 73_257) * 5 * 200 * (1 / 1000 - 1 / 2000)
    assert slow["seconds"]["students"] - base["seconds"]["students"] == pytest.approx(extra)


def test_pgd_rate_is_the_slower_mode_and_a_smaller_groups_gain_is_named():
    from benchmarks.cost import _pgd_row_steps

    record = {"images_per_s": 1000.0, "images_per_s_early_stop": 900.0, "restarts": 5, "steps": 20}
    assert _pgd_row_steps(record) == 900.0 * 100
    assert _pgd_row_steps({**record, "images_per_s_early_stop": 1200.0}) == 1000.0 * 100
    plan = Plan(load_config(ROOT / "config.yaml"))  # 5 seeds per job
    est = estimate(plan, {**RATES, "side_by_side": {"kd": {"k": 2, "gain": 1.3}}})
    assert est["stand_ins"]["side_by_side.teacher.k5"] == "the gain of 2 runs side by side"
    assert estimate(plan, {**RATES, "side_by_side": {"kd": {"k": 5, "gain": 1.3}}})["stand_ins"] == {}


def test_side_by_side_gains_per_step_and_their_stand_ins(tmp_path):
    import json

    import torch

    from benchmarks.cost import from_records

    base = {"device": "cuda", "device_name": "GPU", "quick": False, "command": "c"}
    train = {**base, **_record(), "benchmark": "train_step", "date": "2", "settings": {"compile": True}}
    pgd = {**base, "benchmark": "pgd", "date": "2", "inference_model": True, "images_per_s": 10.0, "restarts": 5,
           "steps": 20}

    def side(role, aggregate):
        return {**base, "benchmark": "concurrency", "date": "3", "compile": True, "role": role,
                "runs": [{"mode": "threads", "k": 5, "aggregate_images_per_s": aggregate}]}

    # The feature step timed in a call of its own (`gpu_session.sh features`): a newer record with that step only.
    features = {**base, "benchmark": "train_step", "date": "4", "settings": {"compile": True}, "n": 500,
                "kd_features": {"images_per_s": 800.0, "first_epoch_s": 1.0}}
    records = tmp_path / "records.jsonl"
    records.write_text("\n".join(json.dumps(r) for r in (train, pgd, side("kd", 1500.0), side("teacher", 1100.0),
                                                         features)))
    rates = from_records(torch.device("cuda"), records)
    assert rates["kd_features"] == 800.0 and rates["kd"] == 1000.0 and "kd_features" not in rates["stand_ins"]
    assert rates["side_by_side"] == {"kd": {"k": 5, "gain": 1.5}, "teacher": {"k": 5, "gain": 1.1}}
    assert rates["stand_ins"]["side_by_side.student"] == "kd's gain"
    assert "side_by_side.teacher" not in rates["stand_ins"]
    plan = Plan(load_config(ROOT / "config.yaml"))
    hours = estimate(plan, rates)["seconds"]["teachers"]
    plain = estimate(plan, {**rates, "side_by_side": {"kd": {"k": 5, "gain": 1.5}}})["seconds"]["teachers"]
    assert hours > plain  # the teachers' own, smaller gain
