"""The paper's tables and figures, from the tidy result rows of `noisekd.evaluate`.

Input: a pandas DataFrame with the columns of `noisekd.evaluate.ROW_COLUMNS` (one row per run x
metric x condition, values as fractions in [0, 1]) and the `noisekd.plan.ReportContext` of the
table or figure (its rule params, `noisekd.plan.report_context(plan, name)`); `ctx.tables` says which student
cells it compares.

- `TABLES[name](frame, ctx) -> Table`: `table1` ... `table5` as in the paper, `table_s1` (values
  behind Figure 2), `table_s2_s3` and `table_s4` (values behind Figures 4 and 5) and
  `table_related` (the related methods of Hong et al. and Sau & Balasubramanian).  A `Table` renders to Markdown,
  LaTeX (booktabs) and CSV.
- `FIGURES[name](frame, ctx) -> matplotlib Figure`: `figure2` ... `figure5`.
- Each is one function, registered with `noisekd.plan.table` / `noisekd.plan.figure` where it is
  defined, with its experiment and the files it reads; the targets are the registry's.

Conventions:
- Student cells show mean +- sample std (ddof=1) over the student seeds, in percent with two
  decimals; a single seed shows the mean alone.  The teacher columns show the one selected teacher
  (role "teacher") of the cell's teacher kind; "teacher_candidate" rows are never used.
- Bold marks the highest mean (at display precision, ties all bold) among the rows the paper
  compares: per column in Tables 1 and related, per row and metric in Table 2, GA vs SR in Tables 3,
  4, 5 and S1, the student columns per row in Tables S2-S4.  Teacher values are never bold.
- A dataset without any student rows of a metric (no OOD set, no corruption set) loses those
  columns and panels; a dataset that has the metric but lacks it for a cell the table needs raises
  `NoiseKDError` naming the table, dataset/cell and metric.
- Aggregation is one groupby per table over the metrics it needs; cells are then dictionary
  look-ups, so 10^5 rows take well under a second per table.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable

import numpy as np

from .errors import NoiseKDError
from .methods import format_number, get_method
from .plan import REPORTS as _REGISTERED
from .plan import figure, table
from .settings import AUTHORS_AGGREGATE, ROBUST_METRICS, WORST_OF_RESTARTS, AttackSetting
from .tables import Column, Row, Stat, Table, TableCell, bold_best

# pandas, matplotlib and seaborn load when a table or figure is built: planning the DAG, which reads
# this module's registrations, stays light.


WORST = WORST_OF_RESTARTS.name
AUTHORS = AUTHORS_AGGREGATE.name
# What Figure 2 plots and Table S1's first block lists: one definition for both and their captions.
FIGURE2_METRIC = AUTHORS_AGGREGATE
# §2.4 names both: the mean corruption accuracy and, following Gu et al., the accuracy on the corrupted
# image among the images whose clean version is classified correctly (the reading the scorecard
# compares with the paper's mCA column).  Tables 1 and related and Figure 3 show both.
MCA = "mca_cond"
MCA_PLAIN = "mca"
CORRUPTION_ACC = "corruption_cond_acc"
REQUIRED_COLUMNS = ("role", "dataset", "cell", "metric", "value", "seed", "attack", "steps", "eps",
                    "step_size", "restarts")

# -- labels -----------------------------------------------------------------------------------------

DATASET_LABELS = {
    "cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "svhn": "SVHN", "digits": "Digits",
    "cinic10": "CINIC-10", "printed_digits": "Printed digits", "cifar10c": "CIFAR-10-C",
}
CORRUPTION_LABELS = {"jpeg_compression": "JPEG", "elastic_transform": "Elastic", "saturate": "Saturation"}


def dataset_label(name: str) -> str:
    return DATASET_LABELS.get(name, name)


def method_label(method: str) -> str:
    """A method's label (`noisekd.methods`): `at+hinton` -> `AT+H`; result rows of teachers say `Teacher`."""
    return "Teacher" if method == "teacher" else get_method(method).label


def cell_label(cell, params: bool = True) -> str:
    """A plan Cell's label, from its method and parameters (e.g. `FT-0.3`, `SR σ=0.05`)."""
    if not params:
        return method_label(cell.method)
    label = get_method(cell.method).cell_label(cell.params, cell.label_corruption)
    return label + " (long schedule)" if cell.long_schedule else label


def corruption_label(name: str) -> str:
    if name in CORRUPTION_LABELS:
        return CORRUPTION_LABELS[name]
    words = name.split("_")
    return " ".join([words[0].capitalize() if words[0] != "gaussian" else "Gaussian", *words[1:]])


def _ood_label(ctx, dataset: str) -> str:
    source = ctx.ood_sources.get(dataset)
    return f"{dataset_label(source)} Acc." if source else "OOD Acc."


def _eps255(eps: float) -> str:
    return format_number(round(eps * 255, 4))


def _attack_desc(s: AttackSetting) -> str:
    return f"PGD-{s.steps} (ε={_eps255(s.eps)}/255, step {format_number(s.step_size)}, {s.restarts} restarts)"


# -- table model ----------------------------------------------------------------------------------


# -- aggregated results -----------------------------------------------------------------------------


def _attack_key(s: AttackSetting | None) -> tuple:
    if s is None:
        return ("", -1, -1.0, -1.0, -1)
    return ("pgd", int(s.steps), round(float(s.eps) * 255, 4), round(float(s.step_size), 8), int(s.restarts))


def _int_col(series) -> np.ndarray:
    import pandas as pd

    return pd.to_numeric(series, errors="coerce").fillna(-1).astype("int64").to_numpy()


class Results:
    """Student statistics per (dataset, cell, metric, attack) and the selected teachers, for one table."""

    def __init__(self, frame, metrics: Iterable[str], who: str):
        import pandas as pd

        if not isinstance(frame, pd.DataFrame):
            raise NoiseKDError(f"{who}: expected a pandas DataFrame of result rows, got {type(frame).__name__}")
        missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
        if missing:
            raise NoiseKDError(f"{who}: result rows lack column(s) {missing}")
        self.who = who
        metrics = tuple(metrics)
        sub = frame.loc[frame["metric"].isin(metrics) & frame["role"].isin(("student", "teacher"))]
        students = sub.loc[sub["role"] == "student"]
        keys = pd.DataFrame({
            "dataset": students["dataset"].astype(str).to_numpy(),
            "cell": students["cell"].astype(str).to_numpy(),
            "metric": students["metric"].astype(str).to_numpy(),
            "attack": students["attack"].fillna("").astype(str).to_numpy(),
            "steps": _int_col(students["steps"]),
            "eps255": (pd.to_numeric(students["eps"], errors="coerce") * 255).round(4).fillna(-1.0).to_numpy(),
            "step_size": pd.to_numeric(students["step_size"], errors="coerce").round(8).fillna(-1.0).to_numpy(),
            "restarts": _int_col(students["restarts"]),
        })
        key_cols = list(keys.columns)
        keys["seed"] = _int_col(students["seed"])
        dup = keys.duplicated(key_cols + ["seed"])
        if dup.any():
            r = keys.loc[dup].iloc[0]
            raise NoiseKDError(f"{who}: duplicate result rows for {r['dataset']}/{r['cell']} seed {r['seed']} "
                               f"metric {r['metric']} (two runs of one seed?)")
        keys["value"] = pd.to_numeric(students["value"], errors="coerce").to_numpy(dtype=float)
        agg = keys.groupby(key_cols, sort=False)["value"].agg(["mean", "std", "count"])
        self.stats: dict[tuple, Stat] = {
            k: Stat(float(m), float(s), int(n))
            for k, m, s, n in zip(agg.index, agg["mean"].to_numpy(), agg["std"].to_numpy(), agg["count"].to_numpy())
        }
        self.present = set(zip(keys["dataset"], keys["metric"]))
        self.teachers: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
        t = sub.loc[sub["role"] == "teacher"]
        seeds = _int_col(t["seed"])
        if "teacher_seed" in t.columns:
            seeds = np.where(seeds < 0, _int_col(t["teacher_seed"]), seeds)
        for d, c, m, s, v in zip(t["dataset"].astype(str), t["cell"].astype(str), t["metric"].astype(str), seeds,
                                 pd.to_numeric(t["value"], errors="coerce")):
            self.teachers.setdefault((d, c, m), []).append((int(s), float(v)))

    def has(self, dataset: str, metric: str) -> bool:
        """Whether the dataset has any student rows of this metric (else its columns are left out)."""
        return (dataset, metric) in self.present

    def find(self, dataset: str, cell: str, metric: str, attack: AttackSetting | None = None) -> Stat | None:
        return self.stats.get((dataset, cell, metric, *_attack_key(attack)))

    def get(self, dataset: str, cell: str, metric: str, attack: AttackSetting | None = None) -> Stat:
        stat = self.find(dataset, cell, metric, attack)
        if stat is None:
            cond = f" at {_attack_desc(attack)}" if attack is not None else ""
            raise NoiseKDError(f"{self.who}: no {metric} rows for {dataset}/{cell}{cond}")
        return stat

    def teacher(self, dataset: str, kind: str | None, metric: str) -> Stat | None:
        """The selected teacher of this kind (None for a cell without a teacher)."""
        if kind is None:
            return None
        rows = self.teachers.get((dataset, kind, metric))
        if not rows:
            raise NoiseKDError(f"{self.who}: no {metric} row for the selected teacher {dataset}/{kind} "
                               f"(role 'teacher', cell {kind!r})")
        seeds = sorted({s for s, _ in rows})
        if len(seeds) > 1:
            raise NoiseKDError(f"{self.who}: {len(seeds)} selected teachers {dataset}/{kind} (seeds {seeds}) "
                               f"for metric {metric}; expected one")
        return Stat(float(np.mean([v for _, v in rows])), math.nan, 1)


def _seeds_note(ctx) -> str:
    n = len(ctx.student_seeds)
    return f"Mean ± 1 std (sample, ddof=1) over {n} student seed{'s' if n != 1 else ''}, in %"


def _ood_metric(res, ctx, layout) -> list[tuple[str, str]]:
    """The OOD accuracy column of a table over these datasets, if any of them has one, with its label."""
    oods = {_ood_label(ctx, d) for d in layout if res.has(d, "ood_acc")}
    if not oods:
        return []
    return [("ood_acc", oods.pop() if len(oods) == 1 else "OOD Acc.")]


def _empty(name: str, title: str, caption: str, index: tuple[str, ...]) -> Table:
    return Table(name, title, caption, index, [Column("-")], [])


def _sigma_sort(keys: Iterable[str]) -> list[str]:
    return sorted(set(keys), key=float)


# -- tables ---------------------------------------------------------------------------------------


@table("table1", experiment="table1", reads={"eval", "teacher"})
def table1(frame, ctx) -> Table:
    who, layout = "table1", ctx.tables.get("table1", {})
    title = "Table 1: Fickle Teacher and knowledge distillation methods"
    if not layout:
        return _empty("table1", title, "Table 1 is not part of this configuration.", ("Method",))
    res = Results(frame, ("test_acc", "ood_acc", MCA_PLAIN, MCA), who)
    columns: list[Column] = []
    specs: list[tuple[str, str]] = []  # (dataset, metric or "teacher")
    for d in layout:
        group = dataset_label(d)
        specs.append((d, "teacher"))
        columns.append(Column("Teacher", group))
        specs.append((d, "test_acc"))
        columns.append(Column("Test Acc.", group))
        if res.has(d, "ood_acc"):
            specs.append((d, "ood_acc"))
            columns.append(Column(_ood_label(ctx, d), group))
        if res.has(d, MCA):
            specs += [(d, MCA_PLAIN), (d, MCA)]
            columns += [Column("mCA", group), Column("mCA (cond.)", group)]
    names = list(dict.fromkeys(n for rows_ in layout.values() for n in rows_.cells))
    rows = []
    for name in names:
        label = next(cell_label(ctx.cell(d, name)) for d in layout if name in layout[d].cells)
        cells = []
        for d, what in specs:
            if name not in layout[d].cells:
                cells.append(TableCell())
            elif what == "teacher":
                cells.append(TableCell(res.teacher(d, ctx.cell(d, name).teacher_kind, "test_acc")))
            else:
                cells.append(TableCell(res.get(d, name, what)))
        rows.append(Row((label,), cells))
    for j, (_, what) in enumerate(specs):
        if what != "teacher":
            bold_best(r.cells[j] for r in rows)
    caption = (
        "Fickle Teacher (FT-x: the student distils from a teacher trained with dropout x, dropout kept "
        "active during distillation) against Hinton KD and feature/relational distillation methods. "
        "Teacher: test accuracy of the selected teacher (best teacher seed) of the row's teacher kind. "
        "Out-of-distribution (OOD) and corruption columns appear for datasets that have them: mCA is the "
        "mean over corruptions x severities of the accuracy on the corrupted image; mCA (cond.) counts only "
        f"images whose clean version is classified correctly (§2.4). {_seeds_note(ctx)}; best per column in "
        "bold."
    )
    return Table("table1", title, caption, ("Method",), columns, rows)


@table("table2", experiment="table2", reads={"eval"})
def table2(frame, ctx) -> Table:
    who, layout = "table2", ctx.tables.get("table2", {})
    title = "Table 2: +Hinton (+H) vs +Fickle Teacher (+FT) on top of other distillation methods"
    if not layout:
        return _empty("table2", title, "Table 2 is not part of this configuration.", ("Method",))
    res = Results(frame, ("test_acc", "ood_acc"), who)
    dropouts = {format_number(ctx.cell(d, trio[2]).params.get("dropout", 0))
                for d in layout for trio in layout[d].rows.values()}
    ft = f"+FT-{dropouts.pop()}" if len(dropouts) == 1 else "+FT"
    metrics = [("test_acc", "Test Acc.")] + _ood_metric(res, ctx, layout)
    long = any(len(trio) == 4 for d in layout for trio in layout[d].rows.values())
    subs = ("Original", "+H", ft) + ((f"{ft} (long)",) if long else ())
    columns = [Column(sub, group) for _, group in metrics for sub in subs]
    rows = []
    multi = len(layout) > 1
    for d, grid in layout.items():
        for feature, trio in grid.rows.items():
            cells = []
            for metric, _ in metrics:
                group = []
                for name in trio:
                    c = TableCell(res.get(d, name, metric) if res.has(d, metric) else None)
                    group.append(c)
                bold_best(group)
                cells += group
            rows.append(Row((method_label(feature),), cells, dataset_label(d) if multi else None))
    ds = ", ".join(dataset_label(d) for d in layout)
    longer = (f" {ft} (long): the same on §4.1's longer {ft[1:]} schedule, the paper's +FT cells being trained "
              "on the standard one." if long else "")
    caption = (f"{ds}. Each feature/relational method alone (Original), with Hinton's KD loss added (+H) and "
               f"with Fickle Teacher ({ft[1:]}) added (+FT).{longer} {_seeds_note(ctx)}; best per row and "
               "metric in bold.")
    return Table("table2", title, caption, ("Method",), columns, rows)


@table("table3", experiment="soft_randomization", reads={"eval"})
def table3(frame, ctx) -> Table:
    who, layout = "table3", ctx.tables.get("soft_randomization", {})
    title = "Table 3: Soft Randomization (SR) vs Gaussian Augmentation (GA), generalization"
    if not layout:
        return _empty("table3", title, "Soft Randomization is not part of this configuration.", ("σ",))
    res = Results(frame, ("test_acc", "ood_acc"), who)
    groups: list[tuple[str, str]] = []
    for d in layout:
        groups.append((d, "test_acc"))
        if res.has(d, "ood_acc"):
            groups.append((d, "ood_acc"))
    columns = []
    for d, metric in groups:
        head = f"{dataset_label(d)} " + ("Test Acc." if metric == "test_acc" else _ood_label(ctx, d))
        columns += [Column("GA", head), Column("SR", head)]
    rows = []
    for s in _sigma_sort(s for d in layout for s in layout[d].pairs):
        cells = []
        for d, metric in groups:
            pair = layout[d].pairs.get(s)
            group = [TableCell(res.get(d, name, metric)) for name in pair] if pair else [TableCell(), TableCell()]
            bold_best(group)
            cells += group
        rows.append(Row((s,), cells))
    caption = ("Students trained on inputs with Gaussian noise of std σ (pixel scale [0, 1]): alone with "
               "cross-entropy (GA) or distilled from the teacher that sees the clean input (SR, Eq. 2). "
               f"{_seeds_note(ctx)}; the better of GA and SR in bold.")
    return Table("table3", title, caption, ("σ",), columns, rows)


def _robust_blocks(restarts: int) -> str:
    first, second = ROBUST_METRICS
    return (f"First block, {first.label}: {first.describe(restarts)}. Second block, {second.label}: "
            f"{second.describe(restarts)}; it is never above the first, the same attack scored more strictly.")


def _attack_table(frame, ctx, key: str) -> Table:
    layout = {d: v for d, v in ctx.tables.get(key, {}).items() if v.pairs}
    if key == "table4":
        attacks = ctx.table4_attacks
        title = f"Table 4: robust accuracy vs PGD steps (ε = {_eps255(ctx.pgd20.eps)}/255)"
        group = f"PGD steps (ε = {_eps255(ctx.pgd20.eps)}/255)"
        names = [str(a.steps) for a in attacks]
        what = (f"PGD attacks with a fixed ε = {_eps255(ctx.pgd20.eps)}/255 and an increasing number of "
                "iterations (columns)")
    else:
        attacks = ctx.table5_attacks
        title = f"Table 5: robust accuracy vs ε (PGD-{ctx.pgd20.steps})"
        group = f"ε (/255), PGD-{ctx.pgd20.steps}"
        names = [_eps255(a.eps) for a in attacks]
        what = f"PGD-{ctx.pgd20.steps} attacks with an increasing ε bound (columns, in units of 1/255)"
    index = ("Dataset", "σ", "Method")
    if not layout or not attacks:
        return _empty(key, title, f"{title.split(':')[0]} is not part of this configuration.", index)
    res = Results(frame, (m.name for m in ROBUST_METRICS), key)
    columns = [Column(n, group) for n in names]
    a0 = attacks[0]
    rows = []
    for metric, block in ((m.name, m.label) for m in ROBUST_METRICS):
        for d, sigmas in layout.items():
            for s in sigmas.sigmas():
                pair = sigmas.pairs[s]
                pair_rows = [Row((dataset_label(d), s, method_label(ctx.cell(d, name).method)),
                                 [TableCell(res.get(d, name, metric, a)) for a in attacks], block) for name in pair]
                for j in range(len(attacks)):
                    bold_best(r.cells[j] for r in pair_rows)
                rows += pair_rows
    caption = (f"GA vs SR students under {what}; step size {format_number(a0.step_size)}, {a0.restarts} random restarts. "
               f"{_robust_blocks(a0.restarts)} {_seeds_note(ctx)}; the better of GA and SR per column in bold.")
    return Table(key, title, caption, index, columns, rows)


@table("table4", experiment="table4", reads={"attack"})
def table4(frame, ctx) -> Table:
    return _attack_table(frame, ctx, "table4")


@table("table5", experiment="table5", reads={"attack"})
def table5(frame, ctx) -> Table:
    return _attack_table(frame, ctx, "table5")


@table("table_s1", experiment="soft_randomization", reads={"attack"})
def table_s1(frame, ctx) -> Table:
    who, layout = "table_s1", ctx.tables.get("soft_randomization", {})
    a = ctx.pgd20
    title = f"Table S1: PGD-{a.steps} robust accuracy of GA vs SR (values of Figure 2)"
    if not layout:
        return _empty(who, title, "Soft Randomization is not part of this configuration.", ("σ",))
    res = Results(frame, (m.name for m in ROBUST_METRICS), who)
    columns = [Column(m, dataset_label(d)) for d in layout for m in ("GA", "SR")]
    rows = []
    for metric, block in ((m.name, m.label) for m in ROBUST_METRICS):
        for s in _sigma_sort(s for d in layout for s in layout[d].pairs):
            cells = []
            for d in layout:
                pair = layout[d].pairs.get(s)
                group = [TableCell(res.get(d, n, metric, a)) for n in pair] if pair else [TableCell(), TableCell()]
                bold_best(group)
                cells += group
            rows.append(Row((s,), cells, block))
    caption = (f"Robust accuracy under {_attack_desc(a)} of students trained with Gaussian noise σ alone (GA) "
               f"or with Soft Randomization (SR). {_robust_blocks(a.restarts)} Figure 2 plots "
               f"{FIGURE2_METRIC.label[0].lower() + FIGURE2_METRIC.label[1:]}. {_seeds_note(ctx)}; the better of GA "
               "and SR in bold.")
    return Table(who, title, caption, ("σ",), columns, rows)


def _mc_table(frame, ctx, metric: str, who: str) -> Table:
    layout = ctx.tables.get("messy_collaboration", {})
    index = ("Label corruption",)
    if metric == "test_acc":
        title = "Tables S2–S3: Messy Collaboration, test accuracy under label corruption (values of Figure 4)"
    else:
        title = "Table S4: Messy Collaboration, out-of-distribution accuracy under label corruption (values of Figure 5)"
    if not layout:
        return _empty(who, title, "Messy Collaboration is not part of this configuration.", index)
    res = Results(frame, (metric,), who)
    datasets = [d for d in layout if metric == "test_acc" or res.has(d, metric)]
    if not datasets:
        return _empty(who, title, "No dataset of the Messy Collaboration experiment has out-of-distribution rows.",
                      index)
    mc_rates = _sigma_sort(r for d in datasets for r in layout[d].mc_rates())
    columns = [Column("Teacher"), Column("Baseline"), Column("Hinton (r=0)")] + [Column(f"MC r={r}") for r in mc_rates]
    rows = []
    for d in datasets:
        for rate in layout[d].rates():
            g = layout[d].rows[rate]
            kind = ctx.cell(d, g.hinton).teacher_kind
            cells = [TableCell(res.teacher(d, kind, metric))]
            students = [TableCell(res.get(d, g.baseline, metric)), TableCell(res.get(d, g.hinton, metric))]
            students += [TableCell(res.get(d, g.mc[r], metric)) if r in g.mc else TableCell() for r in mc_rates]
            bold_best(students)
            rows.append(Row((rate,), cells + students, dataset_label(d)))
    what = "Test accuracy" if metric == "test_acc" else "Out-of-distribution accuracy"
    caption = (f"{what} of students trained on labels of which the given fraction is corrupted (static, "
               "symmetric). Teacher: the selected teacher trained on the same corrupted labels (one model, no "
               "std). Hinton (r=0) is plain KD; MC r: Messy Collaboration re-draws each target uniformly with "
               f"rate r per batch. One block per dataset. {_seeds_note(ctx)}; best student per row in bold.")
    return Table(who, title, caption, index, columns, rows)


@table("table_s2_s3", experiment="messy_collaboration", reads={"eval", "teacher"})
def table_s2_s3(frame, ctx) -> Table:
    return _mc_table(frame, ctx, "test_acc", "table_s2_s3")


@table("table_s4", experiment="messy_collaboration", reads={"eval", "teacher"})
def table_s4(frame, ctx) -> Table:
    return _mc_table(frame, ctx, "ood_acc", "table_s4")


@table("table_related", experiment="related", reads={"eval", "attack"})
def table_related(frame, ctx) -> Table:
    who, layout = "table_related", ctx.tables.get("related", {})
    a = ctx.pgd20
    title = "Related methods: Hinton, Fickle Teacher, GA, SR, clean→noisy feature mimicry and Noisy Teacher"
    title = title.replace("→", " to ")
    if not layout:
        return _empty(who, title, "The related-methods comparison is not part of this configuration.", ("Method",))
    res = Results(frame, ("test_acc", "ood_acc", MCA_PLAIN, MCA, AUTHORS), who)
    metrics = [("test_acc", "Test Acc.")] + _ood_metric(res, ctx, layout)
    if any(res.has(d, MCA) for d in layout):
        metrics += [(MCA_PLAIN, "mCA"), (MCA, "mCA (cond.)")]
    metrics.append((AUTHORS, f"PGD-{a.steps} Acc."))
    columns = [Column(h) for _, h in metrics]
    multi = len(layout) > 1
    rows = []
    for d, names in layout.items():
        block_rows = []
        for name in names.cells:
            cell = ctx.cell(d, name)
            cells = []
            for metric, _ in metrics:
                if metric == AUTHORS:
                    ok = a in cell.attacks
                    cells.append(TableCell(res.get(d, name, metric, a) if ok else None))
                else:
                    cells.append(TableCell(res.get(d, name, metric) if res.has(d, metric) else None))
            block_rows.append(Row((cell_label(cell),), cells, dataset_label(d) if multi else None))
        for j in range(len(metrics)):
            bold_best(r.cells[j] for r in block_rows)
        rows += block_rows
    ds = ", ".join(dataset_label(d) for d in layout)
    caption = (f"{ds}. The paper's methods beside related noise-based distillation: clean-to-noisy feature "
               "mimicry (Hong et al., student on x + N(0, σ²) matches the teacher's clean features) and Noisy "
               "Teacher (Sau & Balasubramanian: teacher logits z(1 + ξ), ξ ~ N(0, σ²), perturbed for the given "
               f"fraction of samples; L2 logit regression or Hinton's KL). mCA: mean corruption accuracy; "
               f"mCA (cond.): among images whose clean version is classified correctly. PGD: {AUTHORS_AGGREGATE.describe(a.restarts)}, under "
               f"{_attack_desc(a)}; '-' where a model was not attacked. {_seeds_note(ctx)}; best per column "
               "in bold.")
    return Table(who, title, caption, ("Method",), columns, rows)


# -- figures --------------------------------------------------------------------------------------

PANEL_W, PANEL_H = 3.4, 2.7  # inches: one panel is one column of a two-column paper


def _plotting():
    """matplotlib (headless) and seaborn, loaded when a figure is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    return plt, sns


def _style():
    _, sns = _plotting()
    return sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.0)


def _figure(n_panels: int, width: float = PANEL_W, height: float = PANEL_H) -> tuple:
    plt, _ = _plotting()
    fig, axes = plt.subplots(1, max(n_panels, 1), figsize=(width * max(n_panels, 1), height),
                             layout="constrained", squeeze=False)
    return fig, list(axes[0])


def _message_figure(title: str, message: str):
    ax_style, rc_style = _style()
    with ax_style, rc_style:
        fig, (ax,) = _figure(1)
        ax.set_axis_off()
        ax.set_title(title)
        ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, transform=ax.transAxes)
    return fig


@figure("figure2", experiment="soft_randomization", reads={"attack"})
def figure2(frame, ctx):
    layout = {d: v for d, v in ctx.tables.get("soft_randomization", {}).items() if v.pairs}
    if not layout:
        return _message_figure("Figure 2", "Soft Randomization is not part of this configuration.")
    a = ctx.pgd20
    res = Results(frame, (FIGURE2_METRIC.name,), "figure2")
    _, sns = _plotting()
    colors = sns.color_palette("colorblind")
    ax_style, rc_style = _style()
    with ax_style, rc_style:
        fig, axes = _figure(len(layout))
        for ax, (d, v) in zip(axes, layout.items()):
            sigmas = v.sigmas()
            x = np.arange(len(sigmas))
            for j, color, marker in ((0, colors[7], "s"), (1, colors[1], "o")):
                names = [v.pairs[s][j] for s in sigmas]
                stats = [res.get(d, n, FIGURE2_METRIC.name, a) for n in names]
                mean = 100 * np.array([s.mean for s in stats])
                std = 100 * np.nan_to_num(np.array([s.std for s in stats]))
                label = "Soft Randomization (SR)" if j else "Gaussian Augmentation (GA)"
                ax.plot(x, mean, marker=marker, color=color, label=label, lw=1.5, ms=4)
                ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.25, lw=0)
            ax.set_xticks(x, sigmas, rotation=45 if len(sigmas) > 6 else 0)
            ax.set_xlabel("Training noise σ (pixel scale [0, 1])")
            ax.set_ylabel(f"PGD-{a.steps} robust accuracy (%)")
            ax.set_title(f"{dataset_label(d)}: ε = {_eps255(a.eps)}/255")
            ax.set_ylim(bottom=0)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=2, frameon=False)
        fig.suptitle(f"{FIGURE2_METRIC.label}: {FIGURE2_METRIC.describe(a.restarts)}", fontsize=7, wrap=True)
    return fig


@figure("figure3", experiment="soft_randomization", reads={"eval"})
def figure3(frame, ctx):
    layout = ctx.tables.get("soft_randomization", {})
    title = "Figure 3"
    if not layout:
        return _message_figure(title, "Soft Randomization is not part of this configuration.")
    import pandas as pd

    plt, sns = _plotting()
    datasets = list(layout)
    sub = frame.loc[(frame["role"] == "student") & (frame["metric"] == CORRUPTION_ACC)
                    & frame["dataset"].isin(datasets)]
    per = sub.assign(value=pd.to_numeric(sub["value"], errors="coerce")).groupby(
        ["dataset", "cell", "corruption"], sort=False)["value"].mean()
    res = Results(frame, (MCA_PLAIN, MCA), "figure3")
    datasets = [d for d in datasets if res.has(d, MCA) and d in per.index.get_level_values(0)]
    if not datasets:
        return _message_figure(title, "No dataset of the Soft Randomization experiment has corruption rows.")
    from .corruptions import CORRUPTIONS  # the CIFAR-10-C order: noise, blur, weather, digital
    panels = []
    for d in datasets:
        v = layout[d]
        names = [v.hinton] + [v.pairs[s][1] for s in v.sigmas()]
        found = set(per.loc[d].index.get_level_values("corruption"))
        order = [c for c in CORRUPTIONS if c in found] + sorted(found - set(CORRUPTIONS))
        acc = np.full((len(names), len(order)), np.nan)
        labels = []
        for i, name in enumerate(names):
            plain, cond = res.get(d, name, MCA_PLAIN), res.get(d, name, MCA)
            labels.append(f"{cell_label(ctx.cell(d, name))} (mCA {100 * plain.mean:.2f}, cond. {100 * cond.mean:.2f})")
            try:
                row = per.loc[(d, name)]
            except KeyError:
                raise NoiseKDError(f"figure3: no {CORRUPTION_ACC} rows for {d}/{name}") from None
            for k, c in enumerate(order):
                if c not in row.index:
                    raise NoiseKDError(f"figure3: no {CORRUPTION_ACC} rows for {d}/{name} corruption {c}")
                acc[i, k] = 100 * row[c]
        panels.append((d, labels, order, acc))
    ax_style, rc_style = _style()
    with ax_style, rc_style:
        ncols = max(len(p[2]) for p in panels)
        nrows = max(len(p[1]) for p in panels)
        fig, axes = plt.subplots(len(panels), 1, figsize=(max(7.0, 0.42 * ncols + 2.6), max(2.6, 0.32 * nrows + 1.6) * len(panels)),
                                 layout="constrained", squeeze=False)
        for ax, (d, labels, order, acc) in zip(axes[:, 0], panels):
            delta = acc - acc[0:1]  # vs Hinton
            lim = max(1.0, float(np.nanmax(np.abs(delta))))
            with warnings.catch_warnings():  # seaborn 0.13 calls Colormap.set_bad (pending deprecation)
                warnings.simplefilter("ignore", PendingDeprecationWarning)
                sns.heatmap(delta, ax=ax, cmap="RdBu", center=0, vmin=-lim, vmax=lim, annot=acc, fmt=".1f",
                            annot_kws={"fontsize": 6}, linewidths=0.4, linecolor="white",
                            xticklabels=[corruption_label(c) for c in order], yticklabels=labels,
                            cbar_kws={"label": "Δ accuracy vs Hinton (pp)", "pad": 0.01})
            ax.set_xticklabels(ax.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
            ax.set_yticklabels(ax.get_yticklabels(), rotation=0)
            ax.axhline(1, color="black", lw=1.0)  # the Hinton reference row above the SR rows
            ax.set_xlabel("Corruption (accuracy in % given a correct clean prediction, mean over severities 1–5 and seeds)")
            ax.set_ylabel("")
            ax.set_title(f"{dataset_label(d)}: corruption robustness of SR vs Hinton")
    return fig


def _mc_figure(frame, ctx, metric: str, who: str):
    layout = ctx.tables.get("messy_collaboration", {})
    name = "Figure 4" if metric == "test_acc" else "Figure 5"
    if not layout:
        return _message_figure(name, "Messy Collaboration is not part of this configuration.")
    res = Results(frame, (metric,), who)
    datasets = [d for d in layout if metric == "test_acc" or res.has(d, metric)]
    if not datasets:
        return _message_figure(name, "No dataset of the Messy Collaboration experiment has out-of-distribution rows.")
    _, sns = _plotting()
    ax_style, rc_style = _style()
    with ax_style, rc_style:
        fig, axes = _figure(len(datasets), height=PANEL_H + 0.2)
        handles: dict[str, object] = {}
        for ax, d in zip(axes, datasets):
            grid = layout[d]
            rates = grid.rates()
            x = np.array([float(r) for r in rates])
            mc_rates = grid.mc_rates()
            mc_colors = sns.color_palette("flare", len(mc_rates)) if mc_rates else []
            base = sns.color_palette("colorblind")
            series = [("Teacher", None, "black", "s", "--"), ("Baseline", "baseline", base[7], "v", "-"),
                      ("Hinton (r=0)", "hinton", base[0], "o", "-")]
            series += [(f"MC r={r}", r, c, "D", "-") for r, c in zip(mc_rates, mc_colors)]
            span = (x.max() - x.min()) if len(x) > 1 else 1.0
            for i, (label, key, color, marker, ls) in enumerate(series):
                xs, ms, sds = [], [], []
                for r, xv in zip(rates, x):
                    g = grid.rows[r]
                    cell = {"baseline": g.baseline, "hinton": g.hinton, **g.mc}.get(key)
                    if key is None:
                        st = res.teacher(d, ctx.cell(d, g.hinton).teacher_kind, metric)
                    elif cell is not None:
                        st = res.get(d, cell, metric)
                    else:
                        continue
                    xs.append(xv)
                    ms.append(100 * st.mean)
                    sds.append(100 * st.std if math.isfinite(st.std) else 0.0)
                if not xs:
                    continue
                if key is None:  # one selected teacher per rate: no spread to show
                    (h,) = ax.plot(xs, ms, label=label, color=color, marker=marker, ls=ls, lw=1.2, ms=3.5)
                else:
                    dodge = (i - (len(series) - 1) / 2) * 0.006 * span  # keep error bars apart
                    h = ax.errorbar(np.array(xs) + dodge, ms, yerr=sds, label=label, color=color, marker=marker,
                                    ls=ls, lw=1.2, ms=3.5, capsize=2, elinewidth=0.8)
                handles.setdefault(label, h)
            ax.set_xticks(x, rates)
            ax.set_xlabel("Label corruption rate")
            ax.set_ylabel(("Test" if metric == "test_acc" else _ood_label(ctx, d).replace(" Acc.", "")) + " accuracy (%)")
            ax.set_title(dataset_label(d))
        fig.legend(list(handles.values()), list(handles), loc="outside lower center",
                   ncol=min(len(handles), 4 if len(datasets) > 1 else 3), frameon=False)
    return fig


@figure("figure4", experiment="messy_collaboration", reads={"eval", "teacher"})
def figure4(frame, ctx):
    return _mc_figure(frame, ctx, "test_acc", "figure4")


@figure("figure5", experiment="messy_collaboration", reads={"eval", "teacher"})
def figure5(frame, ctx):
    return _mc_figure(frame, ctx, "ood_acc", "figure5")


# The paper's tables and figures by name (the registry, noisekd.plan.reports(), also holds any added since).
TABLES = {name: r.build for name, r in _REGISTERED.items() if r.kind == "table"}
FIGURES = {name: r.build for name, r in _REGISTERED.items() if r.kind == "figure"}
