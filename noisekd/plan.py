"""From a workflow config to the static plan of runs: teacher kinds, student cells, evaluations.

The Snakefile is a thin layer over this module: every path, wildcard value and per-table input list
comes from `Plan`, so the DAG is static (fully dry-runnable) and testable from Python.

Naming:
- a teacher kind is `plain`, `p<dropout>` (trained with dropout, for Fickle Teacher) or
  `lc<rate>` (trained on statically corrupted labels, for Messy Collaboration);
- a student cell is the method plus the parameters that distinguish it, e.g. `hinton`,
  `ft_p0.3`, `sr_s0.05`, `mc_r0.2_lc0.3`, `at+ft_p0.4`, `baseline_lc0.3`.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from functools import cached_property

from .evaluate import AttackSetting
from .io import NoiseKDError
from .linear_study_config import StudyConfig
from .methods import MethodParams, get_method
from .models import WRNSpec
from .train import TrainConfig
from .teacher_logits import cacheable

SHORT = {"sigma": "s", "dropout": "p", "mc_rate": "r", "nt_sigma": "ns", "nt_rate": "nr"}


def _num(x: float) -> str:
    return f"{float(x):g}"


@dataclass(frozen=True)
class TeacherKind:
    name: str
    dropout: float = 0.0
    label_corruption: float = 0.0


@dataclass(frozen=True)
class Cell:
    """One student configuration, trained for every student seed."""

    name: str
    method: str
    params: dict = field(hash=False)  # the method parameters that differ from the defaults
    label_corruption: float = 0.0
    attacks: tuple[AttackSetting, ...] = ()

    @property
    def teacher_kind(self) -> str | None:
        m = get_method(self.method)
        if not m.teacher:
            return None
        if m.fickle_teacher:
            return f"p{_num(self.params['dropout'])}"
        if self.label_corruption > 0:
            return f"lc{_num(self.label_corruption)}"
        return "plain"


def cell_name(method: str, params: dict, label_corruption: float = 0.0) -> str:
    m = get_method(method)
    parts = [method] + [f"{SHORT[k]}{_num(params[k])}" for k in m.paper_params]
    if label_corruption > 0:
        parts.append(f"lc{_num(label_corruption)}")
    return "_".join(parts)


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class Plan:
    """The runs a config asks for, per dataset, and which of them each table and figure needs."""

    def __init__(self, config: dict):
        self.config = config
        self.results = config["results_dir"].rstrip("/")
        self.teacher_seeds = list(config["seeds"]["teacher"])
        self.student_seeds = list(config["seeds"]["student"])
        if not self.teacher_seeds or not self.student_seeds:
            raise NoiseKDError("config seeds.teacher and seeds.student must each list at least one seed")
        self.defaults = MethodParams.from_dict(config.get("method_params", {}))
        pgd = config["evaluation"]["pgd"]
        eps = pgd["eps_255"] / 255.0
        self.pgd20 = AttackSetting(pgd["steps"], eps, pgd["step_size"], pgd["restarts"])
        self.table4_attacks = tuple(
            AttackSetting(n, eps, pgd["step_size"], pgd["restarts"]) for n in pgd["table4_steps"]
        )
        self.table5_attacks = tuple(
            AttackSetting(pgd["steps"], e / 255.0, pgd["step_size"], pgd["restarts"]) for e in pgd["table5_eps_255"]
        )
        # A preset switches a dataset of the base config off by setting it to null.
        self.dataset_configs = {d: v for d, v in config["datasets"].items() if v}
        self._cells: dict[str, dict[str, Cell]] = {d: {} for d in self.dataset_configs}
        self.tables: dict[str, dict] = {}
        self._build()
        self._check()

    # -- building -------------------------------------------------------------------------------

    def _add(self, dataset: str, method: str, params: dict | None = None, lc: float = 0.0,
             attacks: tuple[AttackSetting, ...] = ()) -> str:
        if dataset not in self._cells:
            raise NoiseKDError(f"experiments refer to dataset {dataset!r}, which is not under config key datasets")
        params = dict(params or {})
        m = get_method(method)
        full = MethodParams.from_dict({**asdict(self.defaults), **params})
        m.check(full)
        name = cell_name(method, params, lc)
        old = self._cells[dataset].get(name)
        merged = tuple(dict.fromkeys((old.attacks if old else ()) + attacks))
        self._cells[dataset][name] = Cell(name, method, params, float(lc), merged)
        return name

    def _build(self) -> None:
        ex = self.config["experiments"]
        t1 = ex.get("table1")
        if t1:
            for d in t1["datasets"]:
                rows = [self._add(d, m) for m in t1["methods"]]
                rows += [self._add(d, "ft", {"dropout": p}) for p in t1["ft_dropout"]]
                self.tables.setdefault("table1", {})[d] = rows
        t2 = ex.get("table2")
        if t2:
            for d in t2["datasets"]:
                grid = {}
                for m in t2["methods"]:
                    grid[m] = (self._add(d, m), self._add(d, f"{m}+hinton"),
                               self._add(d, f"{m}+ft", {"dropout": t2["ft_dropout"]}))
                self.tables.setdefault("table2", {})[d] = grid
        sr = ex.get("soft_randomization")
        if sr:
            for d in sr["datasets"]:
                pairs = {}
                for s in sr["sigma"]:
                    pairs[_num(s)] = tuple(
                        self._add(d, m, {"sigma": s}, attacks=(self.pgd20,)) for m in ("ga", "sr")
                    )
                self.tables.setdefault("soft_randomization", {})[d] = {
                    "pairs": pairs, "hinton": self._add(d, "hinton")}
                for key, attacks in (("table4", self.table4_attacks), ("table5", self.table5_attacks)):
                    sigmas = (sr.get(f"{key}_sigma") or {}).get(d, [])
                    if not sigmas:  # no cells: the table leaves this dataset out (or is not built at all)
                        continue
                    self.tables.setdefault(key, {})[d] = {
                        _num(s): tuple(self._add(d, m, {"sigma": s}, attacks=attacks) for m in ("ga", "sr"))
                        for s in sigmas
                    }
        mc = ex.get("messy_collaboration")
        if mc:
            for d in mc["datasets"]:
                grid = {}
                for c in mc["label_corruption"]:
                    grid[_num(c)] = {
                        "baseline": self._add(d, "baseline", lc=c),
                        "hinton": self._add(d, "hinton", lc=c),
                        **{_num(r): self._add(d, "mc", {"mc_rate": r}, lc=c) for r in mc["mc_rate"]},
                    }
                self.tables.setdefault("messy_collaboration", {})[d] = grid
        rel = ex.get("related")
        if rel:
            for d in rel["datasets"]:
                rows = [self._add(d, m) for m in ("baseline", "hinton")]
                rows.append(self._add(d, "ft", {"dropout": rel["ft_dropout"]}))
                for s in rel["sigma"]:
                    rows += [self._add(d, m, {"sigma": s}, attacks=(self.pgd20,))
                             for m in ("ga", "sr", "feature_mimicry")]
                for nt in rel["noisy_teacher"]:
                    for m in ("noisy_teacher", "noisy_teacher_kl"):
                        rows.append(self._add(d, m, {"nt_sigma": nt["nt_sigma"], "nt_rate": nt["nt_rate"]},
                                              attacks=(self.pgd20,)))
                self.tables.setdefault("related", {})[d] = rows

    def _check(self) -> None:
        """Refuse, at parse time, what would only fail inside a job hours later."""
        self.train_config(0)
        if "linear_study" in self.config:
            StudyConfig.from_dict(self.config["linear_study"])
        for d in self.datasets():
            for cell in self._cells[d].values():
                self.train_config(0, cell)
                if "fm" in get_method(cell.method).terms(self.method_params(cell)):
                    t, s = self.config["teacher"], self.config["student"]
                    if t["width"] != s["width"]:
                        raise NoiseKDError(
                            f"config keys teacher/student: {cell.name} matches embeddings, so the teacher "
                            f"WRN-{t['depth']}-{t['width']} and the student WRN-{s['depth']}-{s['width']} "
                            "need the same width"
                        )

    # -- queries ----------------------------------------------------------------------------------

    def cells(self, dataset: str) -> dict[str, Cell]:
        return self._cells[dataset]

    def cell(self, dataset: str, name: str) -> Cell:
        try:
            return self._cells[dataset][name]
        except KeyError:
            raise NoiseKDError(f"no student cell {name!r} for dataset {dataset!r} in this config") from None

    @cached_property
    def teacher_kinds(self) -> dict[str, dict[str, TeacherKind]]:
        out: dict[str, dict[str, TeacherKind]] = {}
        for d, cells in self._cells.items():
            kinds = {}
            for c in cells.values():
                k = c.teacher_kind
                if k is None:
                    continue
                m = get_method(c.method)
                kinds[k] = TeacherKind(k, float(c.params["dropout"]) if m.fickle_teacher else 0.0,
                                       0.0 if m.fickle_teacher else c.label_corruption)
            if kinds:
                out[d] = dict(sorted(kinds.items()))
        return out

    def datasets(self) -> list[str]:
        return [d for d, cells in self._cells.items() if cells]

    def teacher_spec(self, dataset: str, kind: str, num_classes: int, mean, std) -> WRNSpec:
        t = self.config["teacher"]
        return WRNSpec(t["depth"], t["width"], num_classes, self.teacher_kinds[dataset][kind].dropout, 3,
                       tuple(mean), tuple(std))

    def student_spec(self, num_classes: int, mean, std) -> WRNSpec:
        s = self.config["student"]
        return WRNSpec(s["depth"], s["width"], num_classes, 0.0, 3, tuple(mean), tuple(std))

    def train_config(self, seed: int, cell: Cell | None = None) -> TrainConfig:
        base, source = dict(self.config["train"]), "train"
        if cell is not None and cell.method == "ft":
            # §4.1: Fickle Teacher students train longer, by the teacher's dropout rate.
            for i, sched in enumerate(self.config.get("fickle_schedules", [])):
                if abs(sched["dropout"] - cell.params["dropout"]) < 1e-9:
                    base.update(epochs=sched["epochs"], milestones=sched["milestones"])
                    source = f"fickle_schedules[{i}]"
        base["milestones"] = tuple(base["milestones"])
        try:
            return TrainConfig(**base, seed=int(seed))
        except NoiseKDError as exc:
            raise NoiseKDError(str(exc).replace("train.", f"{source}.", 1)) from None

    def method_params(self, cell: Cell) -> MethodParams:
        return MethodParams.from_dict({**asdict(self.defaults), **cell.params})

    def uses_teacher_logits(self, cell: Cell) -> bool:
        """Whether the cell's students look their teacher's logits up in a table computed once per
        teacher (train.cache_teacher_logits, for methods whose teacher gives only logits)."""
        return bool(self.config["train"].get("cache_teacher_logits", True)) and cacheable(
            get_method(cell.method), self.method_params(cell))

    def logit_teachers(self) -> list[tuple[str, str]]:
        """(dataset, teacher kind) of every teacher whose logits table some cell reads."""
        return sorted({(d, c.teacher_kind) for d in self.datasets() for c in self._cells[d].values()
                       if self.uses_teacher_logits(c)})

    # -- paths ------------------------------------------------------------------------------------

    def student_runs(self) -> list[tuple[str, str, int]]:
        return [(d, c, s) for d in self.datasets() for c in self._cells[d] for s in self.student_seeds]

    def teacher_runs(self) -> list[tuple[str, str, int]]:
        return [(d, k, s) for d, kinds in self.teacher_kinds.items() for k in kinds for s in self.teacher_seeds]

    def attacked_runs(self) -> list[tuple[str, str, int]]:
        return [(d, c, s) for d, c, s in self.student_runs() if self._cells[d][c].attacks]


# Which experiment each table and figure reads, and which files of its runs it needs.
REPORTS: dict[str, tuple[str, frozenset[str]]] = {
    "table1": ("table1", frozenset({"eval", "teacher"})),
    "table2": ("table2", frozenset({"eval"})),
    "table3": ("soft_randomization", frozenset({"eval"})),
    "table4": ("table4", frozenset({"attack"})),
    "table5": ("table5", frozenset({"attack"})),
    "table_s1": ("soft_randomization", frozenset({"attack"})),
    "table_s2_s3": ("messy_collaboration", frozenset({"eval", "teacher"})),
    "table_s4": ("messy_collaboration", frozenset({"eval", "teacher"})),
    "table_related": ("related", frozenset({"eval", "attack"})),
    "figure2": ("soft_randomization", frozenset({"attack"})),
    "figure3": ("soft_randomization", frozenset({"eval"})),
    "figure4": ("messy_collaboration", frozenset({"eval", "teacher"})),
    "figure5": ("messy_collaboration", frozenset({"eval", "teacher"})),
}


def _flatten(layout) -> list[str]:
    if isinstance(layout, str):
        return [layout]
    if isinstance(layout, dict):
        layout = list(layout.values())
    return [name for item in layout for name in _flatten(item)]


def report_names(plan: Plan, prefix: str) -> list[str]:
    """Tables (prefix 'table') or figures ('figure') whose experiment this config runs."""
    return [n for n, (exp, _) in REPORTS.items() if n.startswith(prefix) and plan.tables.get(exp)]


def report_inputs(plan: Plan, name: str) -> list[str]:
    """The run files one table or figure needs: nothing else is built when it is asked for alone."""
    experiment, needs = REPORTS[name]
    layout = plan.tables.get(experiment)
    if not layout:
        where = (f"experiments.soft_randomization.{experiment}_sigma" if experiment in ("table4", "table5")
                 else f"experiments.{experiment}")
        raise NoiseKDError(f"{name} needs {where} in the config")
    files: list[str] = []
    for dataset, sub in layout.items():
        cells = list(dict.fromkeys(_flatten(sub)))
        for c in cells:
            cell = plan.cell(dataset, c)
            for s in plan.student_seeds:
                run = f"{plan.results}/students/{dataset}/{c}/seed{s}"
                if "eval" in needs:
                    files.append(f"{run}/eval.parquet")
                if "attack" in needs and cell.attacks:
                    files.append(f"{run}/attack.parquet")
        if "teacher" in needs:
            kinds = {plan.cell(dataset, c).teacher_kind for c in cells} - {None}
            files += [f"{plan.results}/teachers/{dataset}/{k}/eval.parquet" for k in sorted(kinds)]
    return files
