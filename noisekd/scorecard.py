"""The reproduction verdict: the paper's published numbers and claims beside this run's.

- `report/published/paper.csv` holds every number of the paper's Tables 1-5 and the results its text
  quotes, with their sources (`load_published`).
- `compare_cells`: each published value beside the reproduced cell it describes (mean ± std over the
  student seeds), its difference Δ and a verdict: "matches" when |Δ| <= max(match_std x the combined
  std, match_points), else "higher" or "lower".  Published values this config does not run are "not
  run"; reproduced values the paper does not print are "no published counterpart".
- `CLAIMS`: the paper's claims as named checks, each registered where it is defined (`@claim`).  A check
  turns one dataset's results into comparisons with their numbers; the claim is "reproduced" when all of
  them hold (most of them, for a claim the paper makes of a majority), "not run" when the config lacks
  its cells.  A claim is checked on the datasets the paper makes it for and on every dataset the paper
  does not use (the demo's digits), never on a paper dataset where the paper does not make it.
- `write_scorecard`: `tables/scorecard.{md,html,csv}`, `tables/claims.csv` and the published-vs-
  reproduced figure (also inside the HTML), from the aggregated result rows only.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import NoiseKDError
from .methods import format_number, get_method
from .paper import (
    AUTHORS,
    CORRUPTION_ACC,
    MCA,
    PANEL_H,
    PANEL_W,
    Results,
    _message_figure,
    _plotting,
    _style,
    cell_label,
    dataset_label,
)
from .plan import Cell, ReportContext
from .settings import AttackSetting
from .tables import Column, Row, Stat, Table, TableCell, html_page, write_figure

PAPER_DATASETS = ("cifar10", "svhn")
PUBLISHED_COLUMNS = ("table", "dataset", "method", "dropout", "sigma", "label_corruption", "mc_rate", "steps",
                     "eps_255", "metric", "mean", "std", "source", "note")
# A published metric and the result metric that reproduces it: the paper's mCA is the conditional one
# (§2.4) and its robust accuracy the worst of the whole-test-set PGD runs (§2.3).
RESULT_METRIC = {"test_acc": "test_acc", "ood_acc": "ood_acc", "mca": MCA, "teacher_test_acc": "test_acc",
                 "robust_acc": AUTHORS}
METRIC_LABELS = {"test_acc": "Test acc.", "ood_acc": "OOD acc.", "mca": "mCA", "teacher_test_acc": "Teacher test acc.",
                 "robust_acc": "Robust acc."}
VERDICTS = ("matches", "higher", "lower")


def load_published(path):
    """The published values, checked for the columns this module reads (one line naming the file otherwise)."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype={"source": str, "note": str}, keep_default_na=True)
    except (OSError, ValueError) as exc:
        raise NoiseKDError(f"published values {path}: unreadable ({exc})") from None
    missing = [c for c in PUBLISHED_COLUMNS if c not in frame.columns]
    if missing:
        raise NoiseKDError(f"published values {path}: missing column(s) {missing}")
    return frame


# -- published values beside reproduced ones -------------------------------------------------------


def _value(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def _close(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=0, abs_tol=1e-9)


def _matching_cell(ctx: ReportContext, row) -> tuple[str | None, str]:
    """Our cell (a teacher kind for teacher rows) that a published row describes, or why there is none
    (the reason starts with "the paper" when the paper leaves the cell open)."""
    if row.dataset not in ctx.cells:
        return None, f"this config runs no {dataset_label(row.dataset)}"
    if row.method == "teacher":
        dropout = _value(row.dropout)
        return (f"p{format_number(dropout)}" if dropout else "plain"), ""
    want = {}
    for p in get_method(row.method).paper_params:
        if _value(getattr(row, p)) is None:
            return None, f"the paper does not name its {p}"
        want[p] = _value(getattr(row, p))
    lc = _value(row.label_corruption) or 0.0
    for c in ctx.cells[row.dataset].values():
        if (c.method == row.method and _close(c.label_corruption, lc) and not c.long_schedule
                and all(p in c.params and _close(c.params[p], v) for p, v in want.items())):
            return c.name, ""
    return None, "this config does not run that cell"


def _cell_attack(ctx: ReportContext, dataset: str, cell: str, steps, eps_255) -> AttackSetting | None:
    for a in ctx.cell(dataset, cell).attacks:
        if a.steps == int(steps) and _close(round(a.eps * 255, 4), eps_255):
            return a
    return None


def _reproduced(res: Results, ctx: ReportContext, row, cell: str) -> tuple[Stat | None, tuple | None]:
    """Our statistic for a published row (None when not run) and its key among the reproduced values."""
    metric = RESULT_METRIC[row.metric]
    if row.method == "teacher":
        rows = res.teachers.get((row.dataset, cell, metric))
        return (res.teacher(row.dataset, cell, metric) if rows else None), ("teacher", row.dataset, cell, metric)
    attack = None
    if row.metric == "robust_acc":
        attack = _cell_attack(ctx, row.dataset, cell, row.steps, row.eps_255)
        if attack is None:
            return None, None
    return res.find(row.dataset, cell, metric, attack), ("student", row.dataset, cell, metric, attack)


def _pgd(steps, eps_255) -> str:
    return f"PGD-{int(steps)}, ε={format_number(eps_255)}/255"


def _condition(row) -> str:
    return _pgd(row.steps, row.eps_255) if row.metric == "robust_acc" else ""


def _published_label(row) -> str:
    if row.method == "teacher":
        dropout = _value(row.dropout)
        return f"Teacher (dropout {format_number(dropout)})" if dropout else "Teacher"
    m = get_method(row.method)
    params = {p: _value(getattr(row, p)) for p in m.paper_params if _value(getattr(row, p)) is not None}
    return m.cell_label(params, _value(row.label_corruption) or 0.0)


def verdict(published_mean: float, published_std, ours: Stat, match_std: float, match_points: float):
    """(verdict, Δ, tolerance) in percentage points: "matches" when |Δ| <= max(match_std x combined std,
    match_points); a missing std (one seed, a value the text quotes) counts as 0."""
    ours_std = 100 * ours.std if math.isfinite(ours.std) else 0.0
    pub_std = _value(published_std) or 0.0
    delta = 100 * ours.mean - float(published_mean)
    tolerance = max(match_std * math.hypot(pub_std, ours_std), match_points)
    return ("matches" if abs(delta) <= tolerance else "higher" if delta > 0 else "lower"), delta, tolerance


def compare_cells(published, res: Results, ctx: ReportContext, match_std: float, match_points: float):
    """One row per published value (its verdict, or "not run"), then one per reproduced value without a
    published counterpart; values in percent."""
    import pandas as pd

    out, matched = [], set()
    for row in published.itertuples(index=False):
        cell, why = _matching_cell(ctx, row)
        stat, key = _reproduced(res, ctx, row, cell) if cell else (None, None)
        base = {"table": row.table, "dataset": row.dataset, "cell": cell or "", "label": _published_label(row),
                "metric": row.metric, "condition": _condition(row), "published_mean": float(row.mean),
                "published_std": _value(row.std), "source": row.source, "note": row.note if isinstance(row.note, str) else ""}
        if stat is None:
            if cell and key is None:
                why = f"this config does not attack {cell} with {_condition(row)}"
            out.append({**base, "verdict": "ambiguous in the paper" if why.startswith("the paper") else "not run",
                        "why": why or "no result rows for this value"})
            continue
        matched.add(key)
        v, delta, tol = verdict(row.mean, row.std, stat, match_std, match_points)
        out.append({**base, "ours_mean": 100 * stat.mean, "ours_std": 100 * stat.std if stat.n > 1 else None,
                    "n": stat.n, "delta": delta, "tolerance": tol, "verdict": v, "why": ""})
    out += _without_counterpart(res, ctx, matched)
    columns = ["table", "dataset", "cell", "label", "metric", "condition", "published_mean", "published_std",
               "ours_mean", "ours_std", "n", "delta", "tolerance", "verdict", "why", "source", "note"]
    return pd.DataFrame(out).reindex(columns=columns)


def _without_counterpart(res: Results, ctx: ReportContext, matched: set) -> list[dict]:
    shown = {v: k for k, v in RESULT_METRIC.items() if k != "teacher_test_acc"}
    out = []
    for (d, cell, metric, attack, steps, eps255, *_), stat in res.stats.items():
        if metric not in shown or (metric == AUTHORS) != (attack == "pgd"):
            continue
        a = _cell_attack(ctx, d, cell, steps, eps255) if attack == "pgd" else None
        if ("student", d, cell, metric, a) in matched:
            continue
        out.append({"table": "", "dataset": d, "cell": cell, "label": cell_label(ctx.cell(d, cell)),
                    "metric": shown[metric], "condition": _pgd(steps, eps255) if a else "",
                    "ours_mean": 100 * stat.mean, "ours_std": 100 * stat.std if stat.n > 1 else None, "n": stat.n,
                    "verdict": "no published counterpart"})
    for (d, kind, metric), rows in res.teachers.items():
        if metric == "test_acc" and ("teacher", d, kind, metric) not in matched:
            out.append({"table": "", "dataset": d, "cell": kind, "label": f"Teacher ({kind})",
                        "metric": "teacher_test_acc", "ours_mean": 100 * rows[0][1], "n": 1,
                        "verdict": "no published counterpart"})
    return out


# -- the paper's claims -----------------------------------------------------------------------------


class NotRun(Exception):
    """A claim's comparison needs cells this config does not run; the message says which key adds them."""


@dataclass(frozen=True)
class Comparison:
    text: str  # the comparison with its numbers, e.g. "FT-0.3 94.56 ± 0.14 > Hinton 94.28 ± 0.09"
    holds: bool


@dataclass(frozen=True)
class Claim:
    name: str
    statement: str  # what the paper claims, as checked here
    source: str  # where the paper says it
    datasets: tuple[str, ...]  # the paper's datasets it makes the claim for
    most: bool  # True: the paper claims it for a majority of the comparisons, not all
    check: Callable  # (Evidence, dataset) -> list[Comparison]; raises NotRun


CLAIMS: dict[str, Claim] = {}


def claim(name: str, statement: str, source: str, datasets: tuple[str, ...], most: bool = False):
    """Register a claim check `check(evidence, dataset) -> list[Comparison]`."""

    def register(check: Callable) -> Callable:
        CLAIMS[name] = Claim(name, statement, source, datasets, most, check)
        return check

    return register


def beats(a_label: str, a: Stat, b_label: str, b: Stat, by: float = 0.0) -> Comparison:
    """a's mean above b's (by more than `by`, a fraction)."""
    holds = a.mean - b.mean > by
    margin = f" by more than {format_number(100 * by)} points" if by else ""
    return Comparison(f"{a_label} {a.text()} {'>' if holds else 'not >'} {b_label} {b.text()}{margin}", holds)


def at_most(label: str, a: Stat, bound: float) -> Comparison:
    holds = a.mean <= bound
    return Comparison(f"{label} {a.text()} {'≤' if holds else '>'} {format_number(100 * bound)}", holds)


class Evidence:
    """What the claim checks read: student and teacher statistics, per-corruption accuracies and the plan."""

    def __init__(self, frame, ctx: ReportContext):
        import pandas as pd

        self.ctx = ctx
        self.res = Results(frame, ("test_acc", "ood_acc", MCA, AUTHORS), "scorecard")
        sub = frame.loc[(frame["role"] == "student") & (frame["metric"] == CORRUPTION_ACC)]
        per = sub.assign(value=pd.to_numeric(sub["value"], errors="coerce")).groupby(
            ["dataset", "cell", "corruption"], sort=False)["value"].mean()
        self.corruption: dict[tuple[str, str], dict[str, float]] = {}
        for (d, c, corruption), v in per.items():
            self.corruption.setdefault((d, c), {})[corruption] = float(v)

    def layout(self, experiment: str, dataset: str):
        layout = self.ctx.tables.get(experiment, {}).get(dataset)
        if layout is None:
            raise NotRun(f"needs experiments.{experiment} on {dataset}")
        return layout

    def cells(self, dataset: str, method: str, **params) -> list[Cell]:
        return [c for c in self.ctx.cells.get(dataset, {}).values() if c.method == method and c.label_corruption == 0
                and all(p in c.params and _close(c.params[p], v) for p, v in params.items())]

    def stat(self, dataset: str, cell: str, metric: str, attack: AttackSetting | None = None) -> Stat:
        return self.res.get(dataset, cell, metric, attack)

    def label(self, dataset: str, cell: str) -> str:
        return cell_label(self.ctx.cell(dataset, cell))

    def metrics(self, dataset: str, metrics=("test_acc", "ood_acc")) -> list[tuple[str, str]]:
        names = {"test_acc": "test acc.", "ood_acc": "OOD acc.", MCA: "mCA"}
        return [(m, names[m]) for m in metrics if self.res.has(dataset, m)]


@claim("ft_beats_hinton", "FT-x students beat the Hinton student for every dropout x ≤ 0.4, in test accuracy, "
       "out-of-distribution accuracy and mCA", "§4.1 and Table 1", ("cifar10",))
def _ft_beats_hinton(ev: Evidence, d: str) -> list[Comparison]:
    hinton = ev.cells(d, "hinton")
    fts = sorted((c for c in ev.cells(d, "ft") if c.params["dropout"] <= 0.4 + 1e-9), key=lambda c: c.params["dropout"])
    if not hinton or not fts:
        raise NotRun("needs the Hinton and FT-x (x ≤ 0.4) students: experiments.table1")
    return [beats(f"{ev.label(d, c.name)} {m_label}", ev.stat(d, c.name, m), "Hinton", ev.stat(d, hinton[0].name, m))
            for m, m_label in ev.metrics(d, ("test_acc", "ood_acc", MCA)) for c in fts]


@claim("ft05_beats_its_teacher", "The FT-0.5 student outperforms its own teacher (trained with dropout 0.5) in "
       "test accuracy", "§4.1 ('For FT-0.5, the student even outperforms the teacher') and Table 1", ("svhn",))
def _ft05_beats_its_teacher(ev: Evidence, d: str) -> list[Comparison]:
    ft = ev.cells(d, "ft", dropout=0.5)
    if not ft:
        raise NotRun("needs the FT-0.5 student: experiments.table1.ft_dropout")
    teacher = ev.res.teacher(d, ft[0].teacher_kind, "test_acc")
    return [beats("FT-0.5 test acc.", ev.stat(d, ft[0].name, "test_acc"), "its teacher", teacher)]


@claim("ft_beats_h_on_top", "Added to AT, SP and RKD, Fickle Teacher (+FT) beats Hinton's loss (+H) in test accuracy "
       "(in CINIC accuracy the paper's own Table 2 has AT+H at 69.57 above AT+FT at 69.46)", "Table 2", ("cifar10",))
def _ft_beats_h_on_top(ev: Evidence, d: str) -> list[Comparison]:
    rows = ev.layout("table2", d).rows
    return [beats(f"{ev.label(d, ft)} test acc.", ev.stat(d, ft, "test_acc"), "+H", ev.stat(d, h, "test_acc"))
            for _, h, ft, *_ in rows.values()]


@claim("sr_beats_ga_generalization", "SR beats GA in test and out-of-distribution accuracy at every σ",
       "§4.2 and Table 3 ('for all σ values ... on CIFAR-10')", ("cifar10",))
def _sr_beats_ga_generalization(ev: Evidence, d: str) -> list[Comparison]:
    pairs = ev.layout("soft_randomization", d).pairs
    return [beats(f"SR σ={s} {m_label}", ev.stat(d, sr, m), "GA", ev.stat(d, ga, m))
            for m, m_label in ev.metrics(d) for s, (ga, sr) in sorted(pairs.items(), key=lambda kv: float(kv[0]))]


WIDE_MARGIN = 0.05  # "by a considerable margin": at least 5 points at the lowest σ


@claim("sr_beats_ga_pgd20", "SR beats GA in PGD-20 robust accuracy at every σ, by a wide margin (≥ 5 points) at "
       "the lowest σ", "§4.2, Figure 2 and Table 4", ("cifar10", "svhn"))
def _sr_beats_ga_pgd20(ev: Evidence, d: str) -> list[Comparison]:
    a = ev.ctx.pgd20
    layout = ev.layout("soft_randomization", d)
    sigmas = [s for s in layout.sigmas() if a is not None and all(a in ev.ctx.cell(d, n).attacks for n in layout.pairs[s])]
    if not sigmas:
        raise NotRun("needs GA and SR students attacked with PGD-20: evaluation.pgd")
    out = []
    for s in sigmas:
        ga, sr = (ev.stat(d, n, AUTHORS, a) for n in layout.pairs[s])
        out.append(beats(f"SR σ={s} PGD-{a.steps}", sr, "GA", ga))
    ga, sr = (ev.stat(d, n, AUTHORS, a) for n in layout.pairs[sigmas[0]])
    out.append(beats(f"SR σ={sigmas[0]} (lowest σ) PGD-{a.steps}", sr, "GA", ga, by=WIDE_MARGIN))
    return out


KEEP_DROP = 0.01  # "maintains its robustness level after 100 steps": loses at most 1 point


@claim("sr_keeps_robustness", "SR keeps its robust accuracy from 100 PGD steps to the most steps run (it loses "
       "at most 1 point)", "§4.2 and Table 4", ("cifar10", "svhn"))
def _sr_keeps_robustness(ev: Evidence, d: str) -> list[Comparison]:
    layout = ev.layout("table4", d)
    attacks = {a.steps: a for a in ev.ctx.table4_attacks}
    if 100 not in attacks or max(attacks) <= 100:
        raise NotRun("needs Table 4 attacks of 100 steps and more: evaluation.pgd.table4_steps")
    first, last = attacks[100], attacks[max(attacks)]
    out = []
    for s in layout.sigmas():
        sr = layout.pairs[s][1]
        at_100, at_last = ev.stat(d, sr, AUTHORS, first), ev.stat(d, sr, AUTHORS, last)
        holds = round(100 * (at_100.mean - at_last.mean), 2) <= 100 * KEEP_DROP  # at display precision
        out.append(Comparison(f"SR σ={s}: PGD-{last.steps} {at_last.text()} vs PGD-100 {at_100.text()} "
                              f"({'within' if holds else 'more than'} 1 point lower)", holds))
    return out


ABOUT_ZERO = 0.02  # "reduces the robustness of the models to 0": at most 2 %


@claim("no_gradient_obfuscation", "Robust accuracy falls to about 0 (≤ 2 %) at the largest ε: no gradient "
       "obfuscation", "§4.2 and Table 5", ("cifar10", "svhn"))
def _no_gradient_obfuscation(ev: Evidence, d: str) -> list[Comparison]:
    layout = ev.layout("table5", d)
    if not ev.ctx.table5_attacks:
        raise NotRun("needs Table 5 attacks: evaluation.pgd.table5_eps_255")
    a = max(ev.ctx.table5_attacks, key=lambda a: a.eps)
    return [at_most(f"{ev.label(d, n)} at ε={format_number(round(a.eps * 255, 4))}/255", ev.stat(d, n, AUTHORS, a),
                    ABOUT_ZERO) for s in layout.sigmas() for n in layout.pairs[s]]


def _is_noise_or_blur(corruption: str) -> bool:
    return corruption.endswith(("_noise", "_blur"))


@claim("sr_raises_mca", "SR raises mCA over the Hinton student at every σ, and most for noise and blur "
       "corruptions (the paper's Figure 3 compares SR with Hinton)", "§4.2 and Figure 3", ("cifar10",))
def _sr_raises_mca(ev: Evidence, d: str) -> list[Comparison]:
    layout = ev.layout("soft_randomization", d)
    if layout.hinton is None or not ev.res.has(d, MCA):
        raise NotRun(f"needs corruption results for {d}: datasets.{d}.corruptions")
    hinton = ev.corruption.get((d, layout.hinton), {})
    out = []
    for s in layout.sigmas():
        sr = layout.pairs[s][1]
        out.append(beats(f"SR σ={s} mCA", ev.stat(d, sr, MCA), "Hinton", ev.stat(d, layout.hinton, MCA)))
        gains = {c: v - hinton[c] for c, v in ev.corruption.get((d, sr), {}).items() if c in hinton}
        noise_blur = [g for c, g in gains.items() if _is_noise_or_blur(c)]
        other = [g for c, g in gains.items() if not _is_noise_or_blur(c)]
        if noise_blur and other:
            nb, ot = 100 * sum(noise_blur) / len(noise_blur), 100 * sum(other) / len(other)
            out.append(Comparison(f"SR σ={s} gain over Hinton: noise and blur {nb:+.2f} {'>' if nb > ot else 'not >'} "
                                  f"other corruptions {ot:+.2f} points", nb > ot))
    return out


def _mc_rows(ev: Evidence, d: str):
    """The label-corruption levels above 0: at 0 the paper's own Table 1 has the Hinton student below
    its teacher, so its "all corruption levels" are the corrupted ones."""
    grid = ev.layout("messy_collaboration", d)
    rows = [(rate, grid.rows[rate]) for rate in grid.rates() if float(rate) > 0]
    if not rows:
        raise NotRun("needs label-corruption rates above 0: experiments.messy_collaboration.label_corruption")
    return rows


@claim("kd_beats_baseline_and_teacher", "At every label-corruption rate above 0 the Hinton (KD) student beats "
       "the baseline and its teacher", "§4.3, Figures 4 and 5", ("cifar10", "svhn"))
def _kd_beats_baseline_and_teacher(ev: Evidence, d: str) -> list[Comparison]:
    out = []
    for m, m_label in ev.metrics(d):
        for rate, row in _mc_rows(ev, d):
            kd = ev.stat(d, row.hinton, m)
            teacher = ev.res.teacher(d, ev.ctx.cell(d, row.hinton).teacher_kind, m)
            out.append(beats(f"KD {m_label} at rate {rate}", kd, "baseline", ev.stat(d, row.baseline, m)))
            out.append(beats(f"KD {m_label} at rate {rate}", kd, "teacher", teacher))
    return out


@claim("mc_beats_kd", "Messy Collaboration beats KD for most label-corruption rates above 0 (a majority of the "
       "(rate, MC noise rate) comparisons)", "§4.3, Figures 4 and 5", ("cifar10", "svhn"), most=True)
def _mc_beats_kd(ev: Evidence, d: str) -> list[Comparison]:
    return [beats(f"MC r={r} {m_label} at rate {rate}", ev.stat(d, cell, m), "KD", ev.stat(d, row.hinton, m))
            for m, m_label in ev.metrics(d) for rate, row in _mc_rows(ev, d) for r, cell in sorted(row.mc.items())]


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    dataset: str
    verdict: str  # "reproduced", "not reproduced" or "not run"
    comparisons: tuple[Comparison, ...] = ()
    why: str = ""  # what a "not run" lacks

    @property
    def held(self) -> str:
        return f"{sum(c.holds for c in self.comparisons)} of {len(self.comparisons)}" if self.comparisons else "-"


def evaluate_claims(ev: Evidence) -> list[ClaimResult]:
    run = list(ev.ctx.cells)
    out = []
    for c in CLAIMS.values():
        for d in list(c.datasets) + [d for d in run if d not in PAPER_DATASETS]:
            if d not in run:
                out.append(ClaimResult(c, d, "not run", why=f"this config runs no {dataset_label(d)}"))
                continue
            try:
                comps = tuple(c.check(ev, d))
            except (NotRun, NoiseKDError) as exc:
                out.append(ClaimResult(c, d, "not run", why=str(exc)))
                continue
            held = sum(x.holds for x in comps)
            ok = held > len(comps) / 2 if c.most else held == len(comps)
            verdict = "not run" if not comps else "reproduced" if ok else "not reproduced"
            out.append(ClaimResult(c, d, verdict, comps, "" if comps else "no comparison in this config"))
    return out


# -- the scorecard's files -------------------------------------------------------------------------


def _pct(x) -> str:
    x = _value(x)
    return "" if x is None else f"{x:.2f}"


def _mean_std(mean, std) -> str:
    return _pct(mean) + (f" ± {_pct(std)}" if _value(std) is not None else "")


def _summary(cells, claims: list[ClaimResult], datasets: list[str], match_std: float, match_points: float) -> list[str]:
    counts = cells["verdict"].value_counts()
    compared = int(sum(counts.get(v, 0) for v in VERDICTS))
    not_run = cells.loc[cells["verdict"] == "not run"].groupby("table").size()
    by_claim = {v: sum(r.verdict == v for r in claims) for v in ("reproduced", "not reproduced", "not run")}
    compared_text = (f"Published values compared: {compared} ({counts.get('matches', 0)} match, "
                     f"{counts.get('higher', 0)} higher, {counts.get('lower', 0)} lower)")
    not_run_text = ", ".join(f"{t}: {n}" for t, n in not_run.items()) or "none"
    return [
        (f"This run ({', '.join(dataset_label(d) for d in datasets)}) against the paper (CIFAR-10, SVHN). "
         f"{compared_text}; not run here: {int(not_run.sum())} ({not_run_text}); reproduced values without a "
         f"published counterpart: {counts.get('no published counterpart', 0)}."),
        (f"Claims: {by_claim['reproduced']} reproduced, {by_claim['not reproduced']} not reproduced, "
         f"{by_claim['not run']} not run (claim × dataset)."),
        (f"A value matches when |Δ| ≤ max({format_number(match_std)} × the combined std, "
         f"{format_number(match_points)} points); the combined std is √(published² + ours²), a missing std (one "
         "seed, a value the text quotes) counting as 0. A claim is checked on the datasets the paper makes it for "
         "and on any dataset the paper does not use; its comparisons are of means."),
    ]


def scorecard_tables(cells, claims: list[ClaimResult]) -> list[Table]:
    seen = {r.dataset for r in claims}
    datasets = [d for d in PAPER_DATASETS if d in seen] + sorted(seen - set(PAPER_DATASETS))
    found = {(r.claim.name, r.dataset): r for r in claims}
    rows = []
    for c in dict.fromkeys(r.claim for r in claims):
        verdicts = []
        for d in datasets:
            r = found.get((c.name, d))
            text = "–" if r is None else f"{r.verdict} ({r.held})" if r.comparisons else r.verdict
            verdicts.append(TableCell(label=text, bold=r is not None and r.verdict == "reproduced"))
        rows.append(Row((c.name,), [TableCell(label=c.statement), TableCell(label=c.source), *verdicts]))
    verdicts = Table("claims", "The paper's claims", "Verdict per dataset, with how many of the claim's comparisons "
                     "hold; –: the paper does not make the claim for that dataset. The comparisons and their numbers "
                     "follow.", ("Claim",),
                     [Column("Statement"), Column("Where the paper says it"),
                      *(Column(dataset_label(d), "Verdict") for d in datasets)], rows)
    evidence_rows = []
    for r in claims:
        index = (r.claim.name, dataset_label(r.dataset))
        evidence_rows += [Row(index, [TableCell(label=c.text), TableCell(label="yes" if c.holds else "no")])
                          for c in r.comparisons]
        if not r.comparisons:
            evidence_rows.append(Row(index, [TableCell(label=f"not run: {r.why}"), TableCell(label="-")]))
    evidence = Table("claim_numbers", "The numbers behind each verdict", "Means ± std over student seeds in %; "
                     "a teacher is one model.", ("Claim", "Dataset"), [Column("Comparison"), Column("Holds")],
                     evidence_rows)
    shown = cells.loc[cells["verdict"].isin(VERDICTS)]
    compared = Table("scorecard_cells", "Published values beside this run's",
                     "Published: the paper's mean ± std; ours: mean ± std over the student seeds (n), in %; Δ = ours "
                     "− published, in points. The CSV beside this file also lists every value not run and every "
                     "reproduced value without a published counterpart.",
                     ("Source", "Dataset", "Cell", "Metric"),
                     [Column("Published"), Column("Ours"), Column("n"), Column("Δ"), Column("Verdict")],
                     [Row((r.table, dataset_label(r.dataset), r.label,
                           METRIC_LABELS[r.metric] + (f" ({r.condition})" if r.condition else "")),
                          [TableCell(label=_mean_std(r.published_mean, r.published_std)),
                           TableCell(label=_mean_std(r.ours_mean, r.ours_std)), TableCell(label=str(int(r.n))),
                           TableCell(label=f"{r.delta:+.2f}"), TableCell(label=r.verdict, bold=r.verdict == "matches")])
                      for r in shown.itertuples(index=False)])
    return [verdicts, evidence, compared]


def scorecard_figure(cells):
    """Published (x) against reproduced (y), one point per compared value with both error bars, y = x."""
    import numpy as np

    shown = cells.loc[cells["verdict"].isin(VERDICTS)]
    if shown.empty:
        return _message_figure("Scorecard", "No reproduced value has a published counterpart in this run "
                                            "(the paper's datasets are CIFAR-10 and SVHN).")
    plt, sns = _plotting()
    palette = sns.color_palette("colorblind")
    colors = {"matches": palette[2], "higher": palette[1], "lower": palette[0]}
    groups = list(dict.fromkeys(shown["table"]))
    ncols = min(3, len(groups))
    nrows = -(-len(groups) // ncols)
    ax_style, rc_style = _style()
    with ax_style, rc_style:
        fig, axes = plt.subplots(nrows, ncols, figsize=(PANEL_W * ncols, PANEL_H * nrows), layout="constrained",
                                 squeeze=False)
        for ax in axes.flat[len(groups):]:
            ax.set_axis_off()
        for ax, group in zip(axes.flat, groups):
            part = shown.loc[shown["table"] == group]
            lo = float(np.nanmin(part[["published_mean", "ours_mean"]].to_numpy()))
            hi = float(np.nanmax(part[["published_mean", "ours_mean"]].to_numpy()))
            pad = max(0.5, 0.05 * (hi - lo))
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", lw=0.8, ls="--", zorder=0)
            for v in VERDICTS:
                sel = part.loc[part["verdict"] == v]
                if len(sel):
                    ax.errorbar(sel["published_mean"], sel["ours_mean"], xerr=sel["published_std"].fillna(0),
                                yerr=sel["ours_std"].fillna(0), ls="none", marker="o", ms=3.5, capsize=1.5,
                                elinewidth=0.7, color=colors[v], label=f"{v} ({len(sel)})")
            ax.set_xlabel("Published (%)")
            ax.set_ylabel("This run (%)")
            ax.set_title(str(group) if str(group).startswith("Table") else "Quoted in the text")
            ax.legend(fontsize=7, frameon=False)
    return fig


def write_scorecard(frame, ctx: ReportContext, published_path, match_std: float, match_points: float,
                    out: dict) -> list[ClaimResult]:
    """tables/scorecard.{md,html,csv}, tables/claims.csv and the figure (png, pdf), each atomically."""
    import pandas as pd

    from .io import write_bytes_atomic

    ev = Evidence(frame, ctx)
    cells = compare_cells(load_published(published_path), ev.res, ctx, match_std, match_points)
    claims = evaluate_claims(ev)
    summary = _summary(cells, claims, list(ctx.cells), match_std, match_points)
    tables = scorecard_tables(cells, claims)
    write_figure(scorecard_figure(cells), out["png"], out["pdf"])
    figure = []  # the figure inside the page, where it has points
    if cells["verdict"].isin(VERDICTS).any():
        data = base64.b64encode(Path(out["png"]).read_bytes()).decode("ascii")
        figure.append(f'<img alt="published against reproduced values" src="data:image/png;base64,{data}">')
    md = "\n\n".join(["# Reproduction scorecard", *summary, *(t.to_markdown() for t in tables)])
    body = "\n".join(["<h1>Reproduction scorecard</h1>", *(f"<p>{html.escape(p)}</p>" for p in summary),
                      *figure, *(t.to_html() for t in tables)])
    claim_rows = pd.DataFrame(
        [{"claim": r.claim.name, "dataset": r.dataset, "verdict": r.verdict, "comparison": c.text, "holds": c.holds,
          "statement": r.claim.statement, "source": r.claim.source} for r in claims for c in r.comparisons]
        + [{"claim": r.claim.name, "dataset": r.dataset, "verdict": r.verdict, "comparison": f"not run: {r.why}",
            "holds": None, "statement": r.claim.statement, "source": r.claim.source} for r in claims if not r.comparisons])
    write_bytes_atomic(out["md"], md.encode("utf-8"))
    write_bytes_atomic(out["html"], html_page("Reproduction scorecard", body).encode("utf-8"))
    write_bytes_atomic(out["csv"], cells.to_csv(index=False).encode("utf-8"))
    write_bytes_atomic(out["claims"], claim_rows.to_csv(index=False).encode("utf-8"))
    return claims
