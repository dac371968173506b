"""Tables and figures from synthetic result frames for the ci, demo and paper plans (no training)."""

from __future__ import annotations

import csv
import io
import json
import math
import time

import numpy as np
import pandas as pd
import pytest
import yaml

from noisekd.corruptions import CORRUPTIONS
from noisekd.errors import NoiseKDError
from noisekd.evaluate import ROW_COLUMNS, rows_frame
from noisekd.paper import FIGURE2_METRIC, FIGURES, TABLES, cell_label, method_label
from noisekd.plan import Plan, deep_merge, report_context
from noisekd.settings import AUTHORS_AGGREGATE, ROBUST_METRICS, WORST_OF_RESTARTS
from noisekd.tables import Stat, Table, write_figure, write_table


def make_plan(preset: str | None, **override) -> Plan:
    with open("config.yaml") as f:
        config = yaml.safe_load(f)
    if preset:
        with open(f"presets/{preset}.yaml") as f:
            config = deep_merge(config, yaml.safe_load(f))
    return Plan(deep_merge(config, override))


def synth(plan: Plan, seed: int = 0, ood: bool = True, corruptions: bool = True) -> pd.DataFrame:
    """Rows shaped like noisekd.evaluate's for every planned run: students, selected teachers and candidates."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {c: [] for c in ROW_COLUMNS}
    prov = {"settings_hash": "abc", "git_commit": "0" * 40, "versions": "{}", "device": "cpu"}

    def add(n, **kw):
        base = {c: None for c in ROW_COLUMNS} | prov | kw
        for c in ROW_COLUMNS:
            v = base[c]
            cols[c].extend(v if isinstance(v, np.ndarray) else [v] * n)

    for d, dcfg in plan.dataset_configs.items():
        has_ood, has_corr = ood and bool(dcfg.get("ood")), corruptions and bool(dcfg.get("corruptions"))
        for kind in plan.teacher_kinds.get(d, {}):
            ident = {"dataset": d, "method": "teacher", "cell": kind, "params": "{}", "label_corruption": 0.0}
            for ts in plan.teacher_seeds:
                add(1, run_id=f"{d}/teachers/{kind}/{ts}", role="teacher_candidate", seed=ts, teacher_seed=ts,
                    metric="selection_acc", value=float(rng.uniform(0.9, 1.0)), **ident)
            ts = plan.teacher_seeds[-1]
            add(1, run_id=f"{d}/teacher/{kind}", role="teacher", seed=ts, teacher_seed=ts, metric="test_acc",
                value=float(rng.uniform(0.9, 0.97)), **ident)
            if has_ood:
                add(1, run_id=f"{d}/teacher/{kind}", role="teacher", seed=ts, teacher_seed=ts, metric="ood_acc",
                    value=float(rng.uniform(0.6, 0.7)), **ident)
        for name, cell in plan.cells(d).items():
            for s in plan.student_seeds:
                ident = {"run_id": f"{d}/{name}/{s}", "role": "student", "dataset": d, "method": cell.method, "cell": name,
                             "params": json.dumps(cell.params, sort_keys=True), "label_corruption": cell.label_corruption,
                             "seed": s, "teacher_seed": plan.teacher_seeds[-1]}
                add(1, metric="test_acc", value=float(rng.uniform(0.85, 0.97)), **ident)
                if has_ood:
                    add(1, metric="ood_acc", value=float(rng.uniform(0.55, 0.7)), **ident)
                if has_corr:
                    n = len(CORRUPTIONS) * 5
                    names = np.repeat(np.array(CORRUPTIONS, dtype=object), 5)
                    sev = np.tile(np.arange(1, 6), len(CORRUPTIONS))
                    acc = rng.uniform(0.4, 0.9, n)
                    add(n, metric="corruption_acc", corruption=names, severity=sev, value=acc, **ident)
                    add(n, metric="corruption_cond_acc", corruption=names, severity=sev,
                        value=np.minimum(acc + 0.05, 1), **ident)
                    add(1, metric="mca", value=float(acc.mean()), **ident)
                    add(1, metric="mca_cond", value=float(np.minimum(acc + 0.05, 1).mean()), **ident)
                for a in cell.attacks:
                    cond = {"attack": "pgd", "steps": a.steps, "eps": a.eps, "step_size": a.step_size, "restarts": a.restarts}
                    worst = float(rng.uniform(0.0, 0.6))
                    add(1, metric="robust_acc_worst_of_restarts", value=worst, **cond, **ident)
                    add(1, metric="robust_acc_final_min_over_runs", value=worst + 0.01, **cond, **ident)
    frame = pd.DataFrame(cols, columns=list(ROW_COLUMNS))
    for col in ("severity", "steps", "restarts", "seed", "teacher_seed"):
        frame[col] = frame[col].astype("Int64")
    for col in ("eps", "step_size", "value", "label_corruption"):
        frame[col] = frame[col].astype("float64")
    return frame


def set_values(frame, dataset, cell, metric, values, role="student"):
    """Overwrite the values of one cell's rows, in seed order."""
    mask = (frame["dataset"] == dataset) & (frame["cell"] == cell) & (frame["metric"] == metric) & (frame["role"] == role)
    idx = frame.index[mask]
    order = frame.loc[idx, "seed"].argsort().to_numpy()
    assert len(idx) == len(values), (cell, metric, len(idx))
    frame.loc[idx[order], "value"] = values


@pytest.fixture(scope="module")
def ci_plan():
    return make_plan("ci", seeds={"student": [0, 1, 2]})


@pytest.fixture(scope="module")
def demo_plan():
    return make_plan("demo")


@pytest.fixture
def ci_frame(ci_plan):
    return synth(ci_plan)


# -- numbers --------------------------------------------------------------------------------------


def test_mean_std_of_one_cell_by_hand(ci_plan, ci_frame):
    set_values(ci_frame, "digits", "hinton", "test_acc", [0.90, 0.92, 0.97])
    table = TABLES["table1"](ci_frame, report_context(ci_plan, "table1"))
    cell = table.cell("Hinton", "Digits / Test Acc.")
    # mean 0.93; sample std sqrt((0.03^2 + 0.01^2 + 0.04^2) / 2) = sqrt(0.0013)
    assert cell.stat.n == 3
    assert cell.stat.mean == pytest.approx(0.93)
    assert cell.stat.std == pytest.approx(math.sqrt(0.0013))
    assert cell.text() == "93.00 ± 3.61"
    assert "93.00 ± 3.61" in table.to_markdown()
    assert r"93.00 $\pm$ 3.61" in table.to_latex()
    rows = list(csv.DictReader(io.StringIO(table.to_csv())))
    hinton = next(r for r in rows if r["Method"] == "Hinton")
    assert float(hinton["Digits / Test Acc. mean"]) == pytest.approx(93.0)
    assert float(hinton["Digits / Test Acc. std"]) == pytest.approx(100 * math.sqrt(0.0013), rel=1e-5)
    assert hinton["Digits / Test Acc. n"] == "3"


def test_mca_and_pgd_columns_are_the_papers_measures(ci_plan, ci_frame):
    # §2.4 names both: the mean corruption accuracy (mca) and the accuracy given a correct clean
    # prediction (mca_cond); Table 1 shows both.  §2.3: PGD reports the worst of the 5 random-start runs.
    set_values(ci_frame, "digits", "hinton", "mca", [0.50, 0.52, 0.54])
    set_values(ci_frame, "digits", "hinton", "mca_cond", [0.70, 0.72, 0.74])
    table1 = TABLES["table1"](ci_frame, report_context(ci_plan, "table1"))
    assert table1.cell("Hinton", "Digits / mCA").text() == "52.00 ± 2.00"
    assert table1.cell("Hinton", "Digits / mCA (cond.)").text() == "72.00 ± 2.00"
    name = next(n for n in ci_plan.tables["related"]["digits"].cells if n.startswith("sr_"))
    a = ci_plan.pgd20
    for metric, values in (("robust_acc_worst_of_restarts", [0.1, 0.1, 0.1]), ("robust_acc_final_min_over_runs", [0.2, 0.3, 0.4])):
        rows = ((ci_frame["cell"] == name) & (ci_frame["metric"] == metric) & (ci_frame["steps"] == a.steps)
                & (ci_frame["eps"] == a.eps))
        ci_frame.loc[rows, "value"] = values
    related = TABLES["table_related"](ci_frame, report_context(ci_plan, "table_related"))
    label = cell_label(ci_plan.cell("digits", name))
    assert related.cell(label, f"PGD-{a.steps} Acc.").text() == "30.00 ± 10.00"


def test_single_seed_shows_mean_only():
    assert Stat(0.9412, math.nan, 1).text() == "94.12"
    assert Stat(0.9412, 0.0012, 5).text() == "94.12 ± 0.12"


def test_bold_marks_the_best(ci_plan, ci_frame):
    set_values(ci_frame, "digits", "at", "test_acc", [0.99, 0.99, 0.99])
    set_values(ci_frame, "digits", "sr_s0.1", "test_acc", [0.10, 0.10, 0.10])
    set_values(ci_frame, "digits", "ga_s0.1", "test_acc", [0.20, 0.20, 0.20])
    t1 = TABLES["table1"](ci_frame, report_context(ci_plan, "table1"))
    col = "Digits / Test Acc."
    assert t1.cell("AT", col).bold
    assert [r.index[0] for r in t1.rows if r.cells[1].bold] == ["AT"]
    assert not any(t1.cell(r.index, "Digits / Teacher").bold for r in t1.rows)  # teachers are references
    at_line = next(line for line in t1.to_markdown().splitlines() if line.startswith("| AT |"))
    assert "| **99.00 ± 0.00** |" in at_line
    assert r"\textbf{99.00 $\pm$ 0.00}" in t1.to_latex()
    t3 = TABLES["table3"](ci_frame, report_context(ci_plan, "table3"))  # GA vs SR per row
    assert t3.cell("0.1", "Digits Test Acc. / GA").bold
    assert not t3.cell("0.1", "Digits Test Acc. / SR").bold


def test_teacher_column_uses_selected_teacher_of_the_right_kind(ci_plan, ci_frame):
    for kind, v in (("plain", 0.9511), ("p0.3", 0.9477), ("lc0.3", 0.8123)):
        set_values(ci_frame, "digits", kind, "test_acc", [v], role="teacher")
    t1 = TABLES["table1"](ci_frame, report_context(ci_plan, "table1"))
    assert t1.cell("Baseline", "Digits / Teacher").text() == "-"
    assert t1.cell("Hinton", "Digits / Teacher").text() == "95.11"
    assert t1.cell("AT", "Digits / Teacher").text() == "95.11"
    assert t1.cell("FT-0.3", "Digits / Teacher").text() == "94.77"
    s2 = TABLES["table_s2_s3"](ci_frame, report_context(ci_plan, "table_s2_s3"))
    assert s2.cell("0", "Teacher").text() == "95.11"
    assert s2.cell("0.3", "Teacher").text() == "81.23"
    # a second 'selected' teacher of one kind is ambiguous
    extra = ci_frame[(ci_frame["role"] == "teacher") & (ci_frame["cell"] == "plain")].copy()
    extra["seed"] = 0
    with pytest.raises(NoiseKDError, match="plain"):
        TABLES["table1"](pd.concat([ci_frame, extra], ignore_index=True), report_context(ci_plan, "table1"))


def test_labels_are_derived_from_cells(demo_plan):
    assert method_label("rkd_da") == "RKD-DA" and method_label("at+hinton") == "AT+H"
    assert cell_label(demo_plan.cell("digits", "ft_p0.3")) == "FT-0.3"
    assert cell_label(demo_plan.cell("digits", "sr_s0.2")) == "SR σ=0.2"
    assert cell_label(demo_plan.cell("digits", "mc_r0.2")) == "MC r=0.2"
    assert cell_label(demo_plan.cell("digits", "noisy_teacher_ns0.5_nr0.5")).startswith("Noisy Teacher (L2)")
    assert cell_label(demo_plan.cell("digits", "noisy_teacher_kl_ns0.5_nr0.5")).startswith("Noisy Teacher (KL)")


# -- structure and rendering ------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["ci", "demo"])
def test_every_table_renders(preset, tmp_path):
    plan = make_plan(preset)
    frame = synth(plan, seed=1)
    for name, build in TABLES.items():
        table = build(frame, report_context(plan, name))
        assert isinstance(table, Table) and table.rows, name
        md, tex, text = table.to_markdown(), table.to_latex(), table.to_csv()
        assert md.count("\n|") >= len(table.rows) + 1
        assert tex.count(r"\begin{tabular}") == 1 and r"\toprule" in tex and r"\bottomrule" in tex
        assert "_" not in tex.replace(r"\_", "").replace("tab:", "")  # escaped (labels aside)
        lines = list(csv.reader(io.StringIO(text)))
        assert len(lines) == len(table.rows) + 1
        assert all(len(line) == len(lines[0]) for line in lines)
        write_table(table, tmp_path / f"{name}.md", tmp_path / f"{name}.tex", tmp_path / f"{name}.csv")
        assert (tmp_path / f"{name}.csv").read_text() == text
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_table_layouts_follow_the_plan(demo_plan):
    frame = synth(demo_plan, seed=2)
    t1 = TABLES["table1"](frame, report_context(demo_plan, "table1"))
    assert [r.index[0] for r in t1.rows] == ["Baseline", "Hinton", "AT", "SP", "RKD-D", "RKD-A", "RKD-DA",
                                             "FT-0.1", "FT-0.3"]
    assert [t1.header(c) for c in t1.columns] == ["Digits / Teacher", "Digits / Test Acc.",
                                                  "Digits / Printed digits Acc.", "Digits / mCA",
                                                  "Digits / mCA (cond.)"]
    t2 = TABLES["table2"](frame, report_context(demo_plan, "table2"))
    # the demo switches on the "+FT (long)" column: +FT trained on §4.1's FT-0.3 schedule
    assert [c.name for c in t2.columns] == ["Original", "+H", "+FT-0.3", "+FT-0.3 (long)"] * 2
    long, standard = demo_plan.cell("digits", "at+ft_p0.3_long"), demo_plan.cell("digits", "at+ft_p0.3")
    assert long.long_schedule and not standard.long_schedule
    assert (demo_plan.train_config(0, long).epochs, demo_plan.train_config(0, long).milestones) == (8, (4, 6))
    assert demo_plan.train_config(0, standard).epochs == 6
    assert t2.cell("AT", "Test Acc. / +FT-0.3 (long)").stat is not None
    t4 = TABLES["table4"](frame, report_context(demo_plan, "table4"))
    assert [c.name for c in t4.columns] == [str(a.steps) for a in demo_plan.table4_attacks]
    n_sigma = len(demo_plan.tables["table4"]["digits"].pairs)  # GA and SR per sigma, in two aggregate blocks
    assert {r.block for r in t4.rows} == {b for b in (t4.rows[0].block, t4.rows[-1].block)}
    assert len(t4.rows) == 2 * 2 * n_sigma
    assert "authors' aggregate" in t4.caption
    t5 = TABLES["table5"](frame, report_context(demo_plan, "table5"))
    assert [c.name for c in t5.columns] == ["4", "16", "32", "64", "128"]
    rel = TABLES["table_related"](frame, report_context(demo_plan, "table_related"))
    assert rel.cell("Hinton", "PGD-20 Acc.").text() == "-"
    assert rel.cell("SR σ=0.2", "PGD-20 Acc.").stat is not None
    s2 = TABLES["table_s2_s3"](frame, report_context(demo_plan, "table_s2_s3"))
    assert [c.name for c in s2.columns] == ["Teacher", "Baseline", "Hinton (r=0)", "MC r=0.2"]
    assert [r.index[0] for r in s2.rows] == ["0", "0.3"]


def test_missing_ood_and_corruptions_are_left_out(ci_plan):
    frame = synth(ci_plan, ood=False, corruptions=False)
    t1 = TABLES["table1"](frame, report_context(ci_plan, "table1"))
    assert [c.name for c in t1.columns] == ["Teacher", "Test Acc."]
    assert [c.name for c in TABLES["table2"](frame, report_context(ci_plan, "table2")).columns] == ["Original", "+H", "+FT-0.3"]
    assert not TABLES["table_s4"](frame, report_context(ci_plan, "table_s4")).rows
    TABLES["table_s4"](frame, report_context(ci_plan, "table_s4")).to_latex()
    assert [c.name for c in TABLES["table_related"](frame, report_context(ci_plan, "table_related")).columns] == ["Test Acc.", "PGD-3 Acc."]
    for name, build in FIGURES.items():
        build(frame, report_context(ci_plan, name)).clear()


@pytest.mark.parametrize("table, cell, metric, message", [
    ("table1", "at", "test_acc", "table1: no test_acc rows for digits/at"),
    ("table1", "ft_p0.3", "mca_cond", "table1: no mca_cond rows for digits/ft_p0.3"),
    ("table3", "sr_s0.1", "ood_acc", "table3: no ood_acc rows for digits/sr_s0.1"),
    ("table4", "ga_s0.1", "robust_acc_final_min_over_runs", "table4: no robust_acc_final_min_over_runs rows for digits/ga_s0.1"),
    ("table_s2_s3", "mc_r0.2_lc0.3", "test_acc", "table_s2_s3: no test_acc rows for digits/mc_r0.2_lc0.3"),
    ("table_related", "feature_mimicry_s0.1", "robust_acc_final_min_over_runs", "digits/feature_mimicry_s0.1"),
])
def test_missing_rows_raise_naming_the_cell(ci_plan, ci_frame, table, cell, metric, message):
    frame = ci_frame[~((ci_frame["cell"] == cell) & (ci_frame["metric"] == metric))]
    with pytest.raises(NoiseKDError, match=message.replace("(", r"\(")):
        TABLES[table](frame, report_context(ci_plan, table))


def test_missing_teacher_and_figure_rows_raise(ci_plan, ci_frame):
    frame = ci_frame[~((ci_frame["role"] == "teacher") & (ci_frame["cell"] == "p0.3"))]
    with pytest.raises(NoiseKDError, match="digits/p0.3"):
        TABLES["table1"](frame, report_context(ci_plan, "table1"))
    frame = ci_frame[~((ci_frame["cell"] == "sr_s0.1") & (ci_frame["metric"] == "robust_acc_final_min_over_runs"))]
    with pytest.raises(NoiseKDError, match="figure2: no robust_acc_final_min_over_runs rows for digits/sr_s0.1"):
        FIGURES["figure2"](frame, report_context(ci_plan, "figure2"))
    frame = ci_frame[~((ci_frame["cell"] == "baseline_lc0.3") & (ci_frame["metric"] == "ood_acc"))]
    with pytest.raises(NoiseKDError, match="figure5: no ood_acc rows for digits/baseline_lc0.3"):
        FIGURES["figure5"](frame, report_context(ci_plan, "figure5"))
    with pytest.raises(NoiseKDError, match="duplicate"):
        dup = ci_frame[(ci_frame["cell"] == "at") & (ci_frame["metric"] == "test_acc")].iloc[:1]
        TABLES["table1"](pd.concat([ci_frame, dup], ignore_index=True), report_context(ci_plan, "table1"))


def test_evaluate_rows_frame_is_accepted(ci_plan, ci_frame):
    """The frame as noisekd.evaluate.rows_frame builds it (object columns with None) works too."""
    frame = rows_frame(ci_frame.astype(object).where(ci_frame.notna(), None).to_dict("records"))
    assert TABLES["table1"](frame, report_context(ci_plan, "table1")).to_csv() == TABLES["table1"](ci_frame, report_context(ci_plan, "table1")).to_csv()


@pytest.mark.parametrize("preset", ["ci", "demo"])
def test_every_figure_renders(preset, tmp_path):
    plan = make_plan(preset)
    frame = synth(plan, seed=3)
    for name, build in FIGURES.items():
        fig = build(frame, report_context(plan, name))
        assert fig.axes, name
        write_figure(fig, tmp_path / f"{name}.png", tmp_path / f"{name}.pdf")
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_all_tables_from_100k_rows_are_fast():
    # the paper's config, with corruption rows for SVHN too, to pass 100 000 rows
    plan = make_plan(None, datasets={"svhn": {"corruptions": {"source": "generate", "seed": 0}}})
    frame = synth(plan, seed=4)
    assert len(frame) >= 100_000
    start = time.perf_counter()
    tables = {name: build(frame, report_context(plan, name)) for name, build in TABLES.items()}
    elapsed = time.perf_counter() - start
    print(f"{len(frame)} rows: all tables in {elapsed:.2f}s")
    assert elapsed < 10
    assert len(tables["table3"].rows) == 10
    assert [c.group for c in tables["table1"].columns][:5] == ["CIFAR-10"] * 5
    assert tables["table1"].columns[2].name == "CINIC-10 Acc."
    assert [c.name for c in tables["table1"].columns[5:]] == ["Teacher", "Test Acc.", "mCA", "mCA (cond.)"]  # SVHN: no OOD


def test_figure2_plots_what_table_s1_and_both_captions_say(ci_plan, ci_frame):
    """One definition (noisekd.paper.FIGURE2_METRIC) decides what Figure 2 plots, which block of Table S1
    holds those values, and what both captions call it: the authors' final-iterate aggregate."""
    assert FIGURE2_METRIC is AUTHORS_AGGREGATE and ROBUST_METRICS[0] is AUTHORS_AGGREGATE
    s1 = TABLES["table_s1"](ci_frame, report_context(ci_plan, "table_s1"))
    fig = FIGURES["figure2"](ci_frame, report_context(ci_plan, "figure2"))
    assert s1.rows[0].block == FIGURE2_METRIC.label  # the authors' protocol first
    assert "Figure 2 plots the authors' aggregate (worst of runs, final iterate)" in s1.caption
    assert fig.get_suptitle().startswith(FIGURE2_METRIC.label)
    pairs = ci_plan.tables["soft_randomization"]["digits"]
    for line, column in zip(fig.axes[0].get_lines()[:2], ("Digits / GA", "Digits / SR")):
        table = [100 * s1.cell(s, column, block=FIGURE2_METRIC.label).stat.mean for s in pairs.sigmas()]
        assert list(line.get_ydata()) == pytest.approx(table)
    other = [100 * s1.cell(s, "Digits / GA", block=WORST_OF_RESTARTS.label).stat.mean for s in pairs.sigmas()]
    assert list(fig.axes[0].get_lines()[0].get_ydata()) != pytest.approx(other)  # the synthetic blocks differ
    import matplotlib.pyplot as plt

    plt.close(fig)
