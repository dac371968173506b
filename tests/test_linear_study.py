"""Mechanics of the deep-linear student-teacher study (noisekd.linear_study), not the directions of its effects."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pandas as pd
import pytest
import torch

from noisekd import linear_study as ls
from noisekd.errors import NoiseKDError
from noisekd.tables import write_figure, write_table

SMALL = {"seeds": [0, 1], "val_window": 400}


@pytest.fixture(scope="module")
def study():
    return ls.run_study(ls.StudyConfig.from_dict(SMALL))


def _metric(results, factor, setting, method, metric):
    sel = results.loc[(results["factor"] == factor) & (results["setting"] == setting)
                      & (results["method"] == method) & (results["metric"] == metric)]
    return sel.sort_values("seed")["value"].to_numpy()


# -- data, loss, training ---------------------------------------------------------------------------


def test_problem_shapes_and_structure():
    cfg = ls.StudyConfig()
    p = ls.make_problem(cfg, 0)
    assert p.U.shape == (cfg.d, cfg.k) and p.A.shape == (cfg.m, cfg.d)
    assert p.A_teacher.shape == (cfg.teacher_outputs, cfg.d) and np.array_equal(p.A_teacher[:cfg.m], p.A)
    assert cfg.m < cfg.k <= min(cfg.h, cfg.teacher_outputs)  # the labels leave room for the teacher to know more
    np.testing.assert_allclose(p.U.T @ p.U, np.eye(cfg.k), atol=1e-12)
    for X, Y, Z, n in ((p.X, p.Y, p.Z, cfg.n_student), (p.X_val, p.Y_val, p.Z_val, cfg.n_val),
                       (p.X_test, p.Y_test, p.Z_test, cfg.n_test)):
        assert X.shape == Z.shape == (n, cfg.d) and Y.shape == (n, cfg.m)
        np.testing.assert_allclose(X - X @ p.U @ p.U.T, 0, atol=1e-12)  # clean inputs lie in span(U)
        np.testing.assert_allclose(Y, X @ p.A.T, atol=1e-12)
    noise = p.Z_test - p.X_test
    assert noise.std() == pytest.approx(cfg.sigma, rel=0.02)
    assert cfg.n_student < cfg.d  # over-parameterised: the training loss can reach zero


def test_student_loss_by_hand():
    W1 = np.array([[1.0, 0.0], [0.0, 2.0]])
    W2 = np.array([[1.0, 1.0]])
    Z = np.array([[1.0, 1.0], [2.0, 0.0]])  # two samples as rows
    Y = np.array([[2.0], [0.0]])
    T = np.array([[1.0, 1.0], [0.0, 0.0]])
    # features W1 z: (1, 2) and (2, 0); outputs 3 and 2; residuals 1 and 2 -> fit (1 + 4) / 2 = 2.5
    # feature residuals (0, 1) and (2, 0) -> (1 + 4) / 2 = 2.5
    assert ls.student_loss(W1, W2, Z, Y) == pytest.approx(2.5)
    assert ls.student_loss(W1, W2, Z, Y, T, lam=0.5) == pytest.approx(2.5 + 0.5 * 2.5)
    loss, fit, _, _ = ls.student_gradients(W1, W2, Z, Y, T, 0.5)
    assert (loss, fit) == pytest.approx((3.75, 2.5))


def test_gradients_match_autograd():
    rng = np.random.default_rng(3)
    W1, W2 = rng.standard_normal((4, 7)), rng.standard_normal((3, 4))
    Z, Y, T = rng.standard_normal((6, 7)), rng.standard_normal((6, 3)), rng.standard_normal((6, 4))
    lam = 0.7
    _, _, g1, g2 = ls.student_gradients(W1, W2, Z, Y, T, lam)
    tW1 = torch.tensor(W1, requires_grad=True)
    tW2 = torch.tensor(W2, requires_grad=True)
    tZ, tY, tT = (torch.tensor(a) for a in (Z, Y, T))
    F = tZ @ tW1.T
    loss = ((F @ tW2.T - tY) ** 2).sum(1).mean() + lam * ((F - tT) ** 2).sum(1).mean()
    loss.backward()
    assert loss.item() == pytest.approx(ls.student_loss(W1, W2, Z, Y, T, lam), rel=1e-12)
    np.testing.assert_allclose(g1, tW1.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g2, tW2.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_expected_and_bayes_error():
    cfg = ls.StudyConfig()
    p = ls.make_problem(cfg, 1)
    M = 0.5 * p.A + 0.01 * np.random.default_rng(0).standard_normal(p.A.shape)
    empirical = float(np.mean(np.sum((p.Z_test @ M.T - p.Y_test) ** 2, 1)) / cfg.m)
    assert empirical == pytest.approx(ls.expected_test_error(M, p.U, p.A, cfg.sigma), rel=0.1)
    oracle = p.A @ p.U @ p.U.T / (1 + cfg.sigma**2)  # E[y | z]
    bayes = ls.bayes_error(p.U, p.A, cfg.sigma)
    assert ls.expected_test_error(oracle, p.U, p.A, cfg.sigma) == pytest.approx(bayes, rel=1e-12)
    assert ls.expected_test_error(1.01 * oracle, p.U, p.A, cfg.sigma) > bayes


def test_divergence_is_reported():
    cfg = ls.StudyConfig()
    p = ls.make_problem(cfg, 0)
    W1, W2 = np.ones((cfg.h, cfg.d)), np.ones((cfg.m, cfg.h))
    with pytest.raises(NoiseKDError, match="diverged"):
        ls.train_two_layer(W1, W2, p.Z, p.Y, lr=10.0, max_steps=100)


# -- the three factors' regimes ---------------------------------------------------------------------


def test_zero_loss_regime_is_reached_and_early_stopping_is_not(study):
    results, _ = study
    tol = ls.StudyConfig().zero_loss_tol
    for method in ls.METHODS:
        zero = _metric(results, "training", "zero_loss", method, "final_train_loss")
        early = _metric(results, "training", "early_stopped", method, "final_train_loss")
        assert len(zero) == len(early) == 2
        assert np.all(zero < tol)
        assert np.all(_metric(results, "training", "zero_loss", method, "reached_tol") == 1.0)
        assert np.all(early > 100 * tol)
        assert np.all(_metric(results, "training", "early_stopped", method, "reached_tol") == 0.0)
        assert np.all(_metric(results, "training", "zero_loss", method, "stop_step")
                      > _metric(results, "training", "early_stopped", method, "stop_step"))


def test_fixed_early_stopping_trains_exactly_early_steps():
    cfg = ls.StudyConfig.from_dict({"seeds": [0], "factors": ["training"], "early_stop": "fixed", "early_steps": 37})
    results, curves = ls.run_study(cfg)
    for method in ls.METHODS:
        assert _metric(results, "training", "early_stopped", method, "stop_step").tolist() == [37.0]
        part = curves.loc[(curves["setting"] == "early_stopped") & (curves["method"] == method)]
        assert part["step"].max() == 37


def test_remix_preserves_the_function_and_changes_the_features():
    cfg = ls.StudyConfig()
    p = ls.make_problem(cfg, 0)
    T = ls.train_teacher(cfg, p, 0, cfg.n_teacher_many, cfg.h)
    rng = np.random.default_rng(5)
    for cond in (1.0, 1e3):
        B = ls.remix_matrix(cfg.h, cond, rng)
        assert np.linalg.cond(B) == pytest.approx(cond, rel=1e-6)
        assert np.linalg.norm(B) == pytest.approx(math.sqrt(cfg.h))
        T1, T2 = ls.remix(T.W1, T.W2, B)
        np.testing.assert_allclose(T2 @ T1, T.W2 @ T.W1, atol=1e-9 * np.abs(T.W2 @ T.W1).max())
        assert np.linalg.norm(T1 - T.W1) > 0.1 * np.linalg.norm(T.W1)
    np.testing.assert_allclose(B @ np.linalg.inv(B), np.eye(cfg.h), atol=1e-9)


def test_remix_settings_in_the_study(study):
    results, _ = study
    for setting in ("orthogonal_mix", "ill_conditioned_mix"):
        assert np.all(_metric(results, "decomposition", setting, "teacher", "function_gap") < 1e-9)
        assert np.all(_metric(results, "decomposition", setting, "teacher", "feature_change") > 0.1)
    cond = _metric(results, "decomposition", "ill_conditioned_mix", "teacher", "mix_condition")
    np.testing.assert_allclose(cond, ls.StudyConfig().condition_number, rtol=1e-6)
    assert np.all(_metric(results, "decomposition", "wide_hidden", "teacher", "hidden_width") == 50)
    assert np.all(_metric(results, "training", "early_stopped", "teacher", "function_gap") == 0.0)


def test_few_sample_teacher_is_worse_on_the_clean_problem(study):
    results, _ = study
    many = _metric(results, "teacher_knowledge", "many_samples", "teacher", "clean_test_error")
    few = _metric(results, "teacher_knowledge", "few_samples", "teacher", "clean_test_error")
    assert np.all(many < 1e-6)  # the knowledgeable teacher solves the clean problem
    assert np.all(few > 100 * many) and np.all(few > 0.05)
    assert np.all(_metric(results, "teacher_knowledge", "few_samples", "teacher", "n_clean") < ls.StudyConfig().k)


def test_label_only_target_is_the_least_squares_fit_from_the_labels():
    rng = np.random.default_rng(0)
    Y = rng.standard_normal((30, 2))
    C = rng.standard_normal((2, 8))
    np.testing.assert_allclose(ls.label_only_target(Y, Y @ C), Y @ C, atol=1e-12)  # the labels suffice
    assert ls.label_r2(Y, Y @ C) == pytest.approx(1.0)
    Q = np.linalg.qr(np.concatenate([Y, rng.standard_normal((30, 3))], axis=1))[0][:, 2:]  # orthogonal to Y
    np.testing.assert_allclose(ls.label_only_target(Y, Q), 0.0, atol=1e-12)  # nothing of it in the labels
    assert ls.label_r2(Y, Q) == pytest.approx(0.0, abs=1e-12)
    F = Y @ C + Q @ rng.standard_normal((3, 8))
    target = ls.label_only_target(Y, F)
    np.testing.assert_allclose(Y.T @ (F - target), 0.0, atol=1e-10)  # the residual is orthogonal to the labels
    np.testing.assert_allclose(target, Y @ C, atol=1e-10)


def test_label_only_control_row(study):
    results, _ = study
    cfg = ls.StudyConfig()
    # the reference teacher knows more than the labels: they explain only part of its features ...
    r2 = _metric(results, "teacher_knowledge", "many_samples", "teacher", "label_r2")
    assert np.all(r2 < 0.9) and np.all(r2 > 0.0)
    assert np.all(_metric(results, "teacher_knowledge", "many_samples", "teacher", "outputs") == cfg.teacher_outputs)
    # ... while a teacher trained on the labels alone knows nothing more, so ST equals its label-only control
    assert np.all(_metric(results, "teacher_knowledge", "labels_only", "teacher", "outputs") == cfg.m)
    # (up to what is left of its small random initialisation in the hidden directions it never used)
    np.testing.assert_allclose(_metric(results, "teacher_knowledge", "labels_only", "teacher", "label_r2"), 1.0,
                               atol=1e-4)
    np.testing.assert_allclose(_metric(results, "teacher_knowledge", "labels_only", "label_only", "test_error"),
                               _metric(results, "teacher_knowledge", "labels_only", "student_teacher", "test_error"),
                               rtol=1e-3)
    # the control is a run of its own: its target differs from the teacher's features where they know more
    lo = _metric(results, "teacher_knowledge", "many_samples", "label_only", "test_error")
    st = _metric(results, "teacher_knowledge", "many_samples", "student_teacher", "test_error")
    base = _metric(results, "teacher_knowledge", "many_samples", "baseline", "test_error")
    assert lo.shape == st.shape == (2,) and np.all(np.abs(lo - st) > 1e-4) and np.all(np.abs(lo - base) > 1e-4)


# -- frames, determinism, config ----------------------------------------------------------------------


def test_frames_are_tidy(study):
    results, curves = study
    assert list(results.columns) == list(ls.RESULT_COLUMNS)
    assert list(curves.columns) == list(ls.CURVE_COLUMNS)
    settings = {(f, s) for f, ss in ls.FACTORS.items() for s in ss}
    assert set(map(tuple, results[["factor", "setting"]].drop_duplicates().to_numpy())) == settings
    assert set(results["method"]) == {"baseline", "label_only", "student_teacher", "teacher", "oracle"}
    assert not results.duplicated(["factor", "setting", "method", "seed", "metric"]).any()
    students = results.loc[results["method"].isin(ls.METHODS)]
    per = students.groupby(["factor", "setting", "method", "seed"])["metric"].apply(frozenset)
    assert (per == frozenset(ls.STUDENT_METRICS)).all() and len(per) == len(settings) * len(ls.METHODS) * 2
    assert set(curves["seed"]) == {0, 1}
    assert curves.groupby(["factor", "setting", "method", "seed"]).ngroups == len(settings) * len(ls.METHODS) * 2
    assert np.isfinite(curves["test_error"]).all() and (curves["test_error"] > 0).all()
    # the reported test error is on the learning curve at the kept step
    row = curves.loc[(curves["setting"] == "zero_loss") & (curves["method"] == "baseline") & (curves["seed"] == 0)]
    assert row["test_error"].iloc[-1] == _metric(results, "training", "zero_loss", "baseline", "test_error")[0]


def test_same_seed_gives_identical_frames_and_another_seed_does_not():
    cfg = {"seeds": [3], "factors": ["teacher_knowledge"], "val_window": 200}
    r1, c1 = ls.run_study(cfg)
    r2, c2 = ls.run_study(ls.StudyConfig.from_dict(cfg))
    pd.testing.assert_frame_equal(r1, r2, check_exact=True)
    pd.testing.assert_frame_equal(c1, c2, check_exact=True)
    r3, _ = ls.run_study({**cfg, "seeds": [4]})
    assert not np.array_equal(r1["value"].to_numpy(), r3["value"].to_numpy())


def test_unknown_config_key_is_rejected_by_name():
    with pytest.raises(NoiseKDError, match="'n_studnet'") as err:
        ls.StudyConfig.from_dict({"n_studnet": 10})
    assert "\n" not in str(err.value)
    with pytest.raises(NoiseKDError, match="'n_student'"):
        ls.StudyConfig.from_dict({"n_student": 60})  # >= d: zero loss would be unreachable
    with pytest.raises(NoiseKDError, match="'n_teacher_few'"):
        ls.StudyConfig.from_dict({"n_teacher_few": 8})
    with pytest.raises(NoiseKDError, match="'m'.*labels determine the clean input"):
        ls.StudyConfig.from_dict({"m": 8})
    with pytest.raises(NoiseKDError, match="'h'"):
        ls.StudyConfig.from_dict({"h": 7})
    with pytest.raises(NoiseKDError, match="'teacher_outputs'"):
        ls.StudyConfig.from_dict({"teacher_outputs": 2})
    with pytest.raises(NoiseKDError, match="'lr'"):
        ls.StudyConfig.from_dict({"lr": "fast"})
    with pytest.raises(NoiseKDError, match="'factors'"):
        ls.StudyConfig.from_dict({"factors": ["training", "nonsense"]})
    cfg = ls.StudyConfig.from_dict({"seeds": [1, 2], "sigma": 1})
    assert cfg.seeds == (1, 2) and cfg.sigma == 1.0 and isinstance(cfg.sigma, float)


def test_verdict_rule():
    assert ls.verdict(np.array([0.10, 0.12, 0.08]), 1.0) == "ST succeeds"
    assert ls.verdict(np.array([-0.10, -0.12, -0.08]), 1.0) == "ST fails (worse)"
    assert ls.verdict(np.array([0.10, -0.12, 0.05]), 1.0) == "within seed spread"
    assert ls.verdict(np.array([0.002, 0.003, 0.0025]), 1.0).startswith("negligible")
    assert ls.verdict(np.array([0.0, 0.0]), 1.0) == "within seed spread"


# -- table and figure -----------------------------------------------------------------------------------


def test_table_and_figure_render(study, tmp_path):
    results, curves = study
    table = ls.study_table(results)
    md, tex, text = table.to_markdown(), table.to_latex(), table.to_csv()
    assert sum(line.startswith("|") for line in md.splitlines()) == 2 + 8  # header, rule, one per setting
    assert "Trained to zero loss" in md and "ill-conditioned" in md and "h=50" in md and "labels alone" in md
    assert "ST vs label-only" in md and "Label-only MSE" in md
    assert "\\begin{tabular}" in tex and "\\bottomrule" in tex and "±" not in tex
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 8
    early = [r for r in rows if r["setting"].startswith("Early-stopped")][0]
    b = _metric(results, "training", "early_stopped", "baseline", "test_error")
    t = _metric(results, "training", "early_stopped", "student_teacher", "test_error")
    assert float(early["baseline_mse_mean"]) == pytest.approx(b.mean(), rel=1e-5)
    assert float(early["effect_mean"]) == pytest.approx((b - t).mean(), rel=1e-4, abs=1e-9)
    assert early["n_seeds"] == "2" and early["effect_verdict"] == ls.verdict(b - t, b.mean())
    lo = _metric(results, "training", "early_stopped", "label_only", "test_error")
    assert float(early["label_only_mse_mean"]) == pytest.approx(lo.mean(), rel=1e-5)
    assert float(early["effect_vs_label_only_mean"]) == pytest.approx((lo - t).mean(), rel=1e-4, abs=1e-9)
    assert early["effect_vs_label_only_verdict"] == ls.verdict(lo - t, lo.mean())
    write_table(table, tmp_path / "t.md", tmp_path / "t.tex", tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text() == text
    fig = ls.study_figure(curves, results)
    assert len(fig.axes) == 3
    write_figure(fig, tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    write_figure(ls.study_figure(curves), tmp_path / "g.png")  # without the markers
    assert (tmp_path / "g.png").stat().st_size > 10_000


def test_table_rejects_a_frame_without_the_columns():
    with pytest.raises(NoiseKDError, match="column"):
        ls.study_table(pd.DataFrame({"factor": ["training"]}))
