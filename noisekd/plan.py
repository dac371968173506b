"""From a workflow config to the static plan of runs: teacher kinds, student cells, evaluations.

The Snakefile is a thin layer over this module: every path, wildcard value, per-table input list and
every job's settings (its rule `params:`) come from `Plan`, so the DAG is static (fully
dry-runnable), testable from Python, and a config edit reruns exactly the jobs whose settings it
changes.  Planning imports no torch.

Naming:
- a teacher kind is `plain`, `p<dropout>` (trained with dropout, for Fickle Teacher) or
  `lc<rate>` (trained on statically corrupted labels, for Messy Collaboration);
- a student cell is the method plus the parameters that distinguish it, e.g. `hinton`,
  `ft_p0.3`, `sr_s0.05`, `mc_r0.2_lc0.3`, `at+ft_p0.4`, `baseline_lc0.3`.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import Callable

from . import lineage
from .errors import NoiseKDError
from .layout import Layout
from .linear_study_config import StudyConfig
from .methods import MethodParams, format_number, get_method
from .settings import ROBUST_METRICS, AttackSetting, Augmentation, TrainConfig


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
    long_schedule: bool = False  # trained on §4.1's Fickle Teacher schedule of its dropout (Table 2's option)

    def to_dict(self) -> dict:
        return {"name": self.name, "method": self.method, "params": dict(self.params),
                "label_corruption": self.label_corruption, "attacks": [asdict(a) for a in self.attacks],
                "long_schedule": self.long_schedule}

    @classmethod
    def from_dict(cls, d: dict) -> "Cell":
        return cls(d["name"], d["method"], dict(d["params"]), float(d["label_corruption"]),
                   tuple(AttackSetting(**a) for a in d["attacks"]), bool(d.get("long_schedule", False)))

    @property
    def teacher_kind(self) -> str | None:
        m = get_method(self.method)
        if not m.teacher:
            return None
        if m.fickle_teacher:
            return f"p{format_number(self.params['dropout'])}"
        if self.label_corruption > 0:
            return f"lc{format_number(self.label_corruption)}"
        return "plain"


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# -- what each experiment lays out: the cells of its tables, typed ---------------------------------


@dataclass(frozen=True)
class CellRows:
    """One row per cell (Table 1, the related methods)."""

    cells: tuple[str, ...]

    def names(self) -> list[str]:
        return list(self.cells)


@dataclass(frozen=True)
class FeatureRows:
    """Table 2: per feature method, its cells alone, with Hinton's loss (+H) and with Fickle Teacher (+FT),
    and optionally +FT on §4.1's longer schedule."""

    rows: dict[str, tuple[str, ...]]

    def names(self) -> list[str]:
        return [c for trio in self.rows.values() for c in trio]


@dataclass(frozen=True)
class SigmaPairs:
    """The GA and SR cells per σ (Table 3, Figures 2 and 3, Tables 4, 5 and S1), and the Hinton
    reference where the experiment has one."""

    pairs: dict[str, tuple[str, str]]  # σ as written -> (GA cell, SR cell)
    hinton: str | None = None

    def sigmas(self) -> list[str]:
        return sorted(self.pairs, key=float)

    def names(self) -> list[str]:
        return [c for pair in self.pairs.values() for c in pair] + ([self.hinton] if self.hinton else [])


@dataclass(frozen=True)
class MCRow:
    baseline: str
    hinton: str
    mc: dict[str, str]  # MC rate as written -> cell


@dataclass(frozen=True)
class NoiseGrid:
    """Messy Collaboration: per label-corruption rate, the baseline, Hinton and MC cells."""

    rows: dict[str, MCRow]  # label-corruption rate as written -> its cells

    def rates(self) -> list[str]:
        return sorted(self.rows, key=float)

    def mc_rates(self) -> list[str]:
        return sorted({r for row in self.rows.values() for r in row.mc}, key=float)

    def names(self) -> list[str]:
        return [c for row in self.rows.values() for c in (row.baseline, row.hinton, *row.mc.values())]


def layout_to_params(layout) -> dict:
    return {"type": type(layout).__name__, **asdict(layout)}


def layout_from_params(p: dict):
    fields_ = {k: v for k, v in p.items() if k != "type"}
    if p["type"] == "CellRows":
        return CellRows(tuple(fields_["cells"]))
    if p["type"] == "FeatureRows":
        return FeatureRows({m: tuple(trio) for m, trio in fields_["rows"].items()})
    if p["type"] == "SigmaPairs":
        return SigmaPairs({s: tuple(pair) for s, pair in fields_["pairs"].items()}, fields_["hinton"])
    return NoiseGrid({r: MCRow(**row) for r, row in fields_["rows"].items()})


# The named blocks of each rule's settings: each block is one rule param, so that Snakemake says which
# block a config edit changed when it reruns a job (see Plan.settings and noisekd.lineage).
SETTINGS_BLOCKS: dict[str, tuple[str, ...]] = {
    "prepare_dataset": ("data",),
    "prepare_ood": ("ood",),
    "prepare_corruptions": ("corruptions",),
    "corrupt_labels": ("labels",),
    "train_teachers": ("data", "labels", "teacher"),
    "teacher_logits": ("data", "labels", "teacher"),
    "evaluate_teacher": ("data", "labels", "teacher", "selection", "evaluation"),
    "train_students": ("data", "labels", "teacher", "student"),
    # a cell's seeds are evaluated (attacked) in one job; each seed's result file records its `seed` too
    "evaluate_students": ("data", "labels", "teacher", "student", "evaluation"),
    "attack_students": ("data", "labels", "teacher", "student", "attack"),
}


class Plan:
    """The runs a config asks for, per dataset, which of them each table and figure needs, and the
    settings of every job."""

    def __init__(self, config: dict):
        self.config = config
        self.results = config["results_dir"].rstrip("/")
        self.layout = Layout(self.results)
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
             attacks: tuple[AttackSetting, ...] = (), long_schedule: bool = False) -> str:
        if dataset not in self._cells:
            raise NoiseKDError(f"experiments refer to dataset {dataset!r}, which is not under config key datasets")
        params = dict(params or {})
        m = get_method(method)
        full = MethodParams.from_dict({**asdict(self.defaults), **params})
        m.check(full)
        name = m.cell_name(params, lc) + ("_long" if long_schedule else "")
        old = self._cells[dataset].get(name)
        merged = tuple(dict.fromkeys((old.attacks if old else ()) + attacks))
        self._cells[dataset][name] = Cell(name, method, params, float(lc), merged, long_schedule)
        return name

    def _build(self) -> None:
        ex = self.config["experiments"]
        t1 = ex.get("table1")
        for d in (t1 or {}).get("datasets", []):
            rows = [self._add(d, m) for m in t1["methods"]]
            rows += [self._add(d, "ft", {"dropout": p}) for p in t1["ft_dropout"]]
            self.tables.setdefault("table1", {})[d] = CellRows(tuple(rows))
        t2 = ex.get("table2")
        for d in (t2 or {}).get("datasets", []):
            ft = {"dropout": t2["ft_dropout"]}
            # optional fourth column: +FT on §4.1's longer schedule (the paper trains +FT on the standard one)
            long = t2.get("ft_long_schedule", False)
            self.tables.setdefault("table2", {})[d] = FeatureRows({
                m: (self._add(d, m), self._add(d, f"{m}+hinton"), self._add(d, f"{m}+ft", ft))
                + ((self._add(d, f"{m}+ft", ft, long_schedule=True),) if long else ())
                for m in t2["methods"]})
        sr = ex.get("soft_randomization")
        for d in (sr or {}).get("datasets", []):
            self.tables.setdefault("soft_randomization", {})[d] = SigmaPairs(
                self._sigma_pairs(d, sr["sigma"], (self.pgd20,)), self._add(d, "hinton"))
            for key, attacks in (("table4", self.table4_attacks), ("table5", self.table5_attacks)):
                sigmas = (sr.get(f"{key}_sigma") or {}).get(d, [])
                if sigmas:  # no cells: the table leaves this dataset out (or is not built at all)
                    self.tables.setdefault(key, {})[d] = SigmaPairs(self._sigma_pairs(d, sigmas, attacks))
        mc = ex.get("messy_collaboration")
        for d in (mc or {}).get("datasets", []):
            self.tables.setdefault("messy_collaboration", {})[d] = NoiseGrid({
                format_number(c): MCRow(self._add(d, "baseline", lc=c), self._add(d, "hinton", lc=c),
                                        {format_number(r): self._add(d, "mc", {"mc_rate": r}, lc=c)
                                         for r in mc["mc_rate"]})
                for c in mc["label_corruption"]})
        rel = ex.get("related")
        for d in (rel or {}).get("datasets", []):
            rows = [self._add(d, m) for m in ("baseline", "hinton")]
            rows.append(self._add(d, "ft", {"dropout": rel["ft_dropout"]}))
            for s in rel["sigma"]:
                rows += [self._add(d, m, {"sigma": s}, attacks=(self.pgd20,)) for m in ("ga", "sr", "feature_mimicry")]
            for nt in rel["noisy_teacher"]:
                rows += [self._add(d, m, {"nt_sigma": nt["nt_sigma"], "nt_rate": nt["nt_rate"]}, attacks=(self.pgd20,))
                         for m in ("noisy_teacher", "noisy_teacher_kl")]
            self.tables.setdefault("related", {})[d] = CellRows(tuple(rows))

    def _sigma_pairs(self, dataset: str, sigmas, attacks) -> dict[str, tuple[str, str]]:
        return {format_number(s): tuple(self._add(dataset, m, {"sigma": s}, attacks=attacks) for m in ("ga", "sr"))
                for s in sigmas}

    def _check(self) -> None:
        """Refuse, at parse time, what would only fail inside a job hours later."""
        self.train_config(0)
        if "linear_study" in self.config:
            StudyConfig.from_dict(self.config["linear_study"])
        selection = self.config["teacher_selection"]
        if selection["by"] == "validation" and not selection.get("validation_fraction"):
            raise NoiseKDError("config key teacher_selection.validation_fraction: selecting teachers by validation "
                               "accuracy needs a held-out fraction of the training set (> 0)")
        for d, spec in self.dataset_configs.items():
            if (spec.get("corruptions") or {}).get("source") == "released" and spec["source"] != "cifar10":
                raise NoiseKDError(f"config key datasets.{d}.corruptions.source: 'released' exists only for "
                                   "cifar10; use 'generate'")
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

    def train_config(self, seed: int, cell: Cell | None = None) -> TrainConfig:
        base, source = dict(self.config["train"]), "train"
        if cell is not None and (cell.method == "ft" or cell.long_schedule):
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
        return bool(self.config["train"].get("cache_teacher_logits", True)) and get_method(
            cell.method).cacheable(self.method_params(cell))

    def logit_teachers(self) -> list[tuple[str, str]]:
        """(dataset, teacher kind) of every teacher whose logits table some cell reads."""
        return sorted({(d, c.teacher_kind) for d in self.datasets() for c in self._cells[d].values()
                       if self.uses_teacher_logits(c)})

    # -- settings: what each job's numbers depend on, its rule `params:` --------------------------
    #
    # Each is a plain dict of named blocks holding the job's whole lineage (see noisekd.lineage); it
    # leaves out what only changes speed or location (noisekd.settings.Runtime).  The selected teacher
    # seed depends on the teachers' results, so it is not part of any settings: jobs that load the
    # selected teacher get it as a separate parameter, and the tables check it against best.json.

    def data_settings(self, dataset: str) -> dict:
        """The dataset as prepared: its source and loader options, and the held-out validation split."""
        d = self.dataset_configs[dataset]
        out = {"source": d["source"]}
        if d["source"] == "digits":
            out.update({k: d[k] for k in ("size", "test_fraction", "split_seed") if k in d})
        selection = self.config["teacher_selection"]
        fraction = float(selection.get("validation_fraction") or 0.0)
        out["holdout"] = {"fraction": fraction, "seed": int(selection.get("seed", 0))} if fraction > 0 else None
        return out

    def labels_settings(self, rate: float) -> dict | None:
        if not rate:
            return None
        return {"rate": float(rate), "seed": int(self.config.get("label_corruption_seed", 0))}

    def ood_settings(self, dataset: str) -> dict | None:
        ood = self.dataset_configs[dataset].get("ood")
        return dict(ood) if ood else None

    def corruption_settings(self, dataset: str) -> dict | None:
        spec = self.dataset_configs[dataset].get("corruptions")
        if not spec:
            return None
        # The released files have no seed; only generated corruptions draw from one.
        if spec["source"] == "released":
            return {"source": "released"}
        # frost: the script's photographs (until 2026-11-30 a procedural stand-in; such sets rerun)
        return {"source": spec["source"], "seed": int(spec.get("seed", 0)), "frost": "photographs"}

    def augmentation(self, dataset: str) -> dict:
        return asdict(Augmentation(**self.dataset_configs[dataset]["augmentation"]))

    def _teacher_block(self, dataset: str, kind: str) -> dict:
        t = self.config["teacher"]
        return {"network": {"depth": t["depth"], "width": t["width"],
                            "dropout": self.teacher_kinds[dataset][kind].dropout},
                "train": self.train_config(0).numbers(), "augmentation": self.augmentation(dataset)}

    def _student_block(self, dataset: str, cell: Cell) -> dict:
        s, method = self.config["student"], get_method(cell.method)
        return {"network": {"depth": s["depth"], "width": s["width"]},
                "train": self.train_config(0, cell).numbers(), "augmentation": self.augmentation(dataset),
                "method": cell.method, "method_params": method.settings(self.method_params(cell))}

    def _evaluation_block(self, dataset: str) -> dict:
        return {"ood": self.ood_settings(dataset), "corruptions": self.corruption_settings(dataset)}

    def _attack_block(self, cell: Cell) -> dict:
        pgd = self.config["evaluation"]["pgd"]
        # Random starts are drawn per chunk of batch_size rows, so the batch size is part of the seed.
        # The metrics name how each run is scored (a file scored otherwise is stale, not mixed in).
        return {"attacks": [asdict(a) for a in cell.attacks], "batch_size": pgd.get("batch_size", 5000),
                "metrics": [m.name for m in ROBUST_METRICS]}

    @functools.cache
    def teacher_settings(self, dataset: str, kind: str) -> dict:
        """A teacher kind's training job (each seed's run adds its `seed`)."""
        k = self.teacher_kinds[dataset][kind]
        return {"data": self.data_settings(dataset), "labels": self.labels_settings(k.label_corruption),
                "teacher": self._teacher_block(dataset, kind)}

    @functools.cache
    def student_settings(self, dataset: str, cell_name: str) -> dict:
        """A student cell's training job (each seed's run adds its `seed`)."""
        cell = self.cell(dataset, cell_name)
        kind = cell.teacher_kind
        return {"data": self.data_settings(dataset), "labels": self.labels_settings(cell.label_corruption),
                "teacher": self._teacher_block(dataset, kind) if kind else None,
                "student": self._student_block(dataset, cell)}

    def student_run_settings(self, dataset: str, cell: str, seed: int) -> dict:
        return {**self.student_settings(dataset, cell), "seed": int(seed)}

    def teacher_eval_settings(self, dataset: str, kind: str) -> dict:
        return {**self.teacher_settings(dataset, kind), "selection": {"by": self.config["teacher_selection"]["by"]},
                "evaluation": self._evaluation_block(dataset)}

    def student_eval_settings(self, dataset: str, cell: str, seed: int | None = None) -> dict:
        """A cell's evaluation job (seed None), or the settings its result file of `seed` records."""
        run = self.student_settings(dataset, cell) if seed is None else self.student_run_settings(dataset, cell, seed)
        return {**run, "evaluation": self._evaluation_block(dataset)}

    def attack_settings(self, dataset: str, cell: str, seed: int | None = None) -> dict:
        """A cell's attack job (seed None), or the settings its result file of `seed` records."""
        run = self.student_settings(dataset, cell) if seed is None else self.student_run_settings(dataset, cell, seed)
        return {**run, "attack": self._attack_block(self.cell(dataset, cell))}

    def settings(self, rule: str, **wildcards: str) -> dict:
        """The settings of one job of `rule` (wildcards as Snakemake gives them: strings)."""
        w = wildcards
        by_rule = {
            "prepare_dataset": lambda: {"data": self.data_settings(w["dataset"])},
            "prepare_ood": lambda: {"ood": self.ood_settings(w["dataset"])},
            "prepare_corruptions": lambda: {"corruptions": self.corruption_settings(w["dataset"])},
            "corrupt_labels": lambda: {"labels": self.labels_settings(float(w["rate"]))},
            "train_teachers": lambda: self.teacher_settings(w["dataset"], w["kind"]),
            # a logits table is computed with its teacher's augmentation and numerics: the teacher's settings
            "teacher_logits": lambda: self.teacher_settings(w["dataset"], w["kind"]),
            "evaluate_teacher": lambda: self.teacher_eval_settings(w["dataset"], w["kind"]),
            "train_students": lambda: self.student_settings(w["dataset"], w["cell"]),
            "evaluate_students": lambda: self.student_eval_settings(w["dataset"], w["cell"]),
            "attack_students": lambda: self.attack_settings(w["dataset"], w["cell"]),
        }
        if rule not in by_rule:
            raise NoiseKDError(f"rule {rule} has no settings in the plan")
        return by_rule[rule]()

    def linear_study_settings(self) -> dict:
        """Hong et al.'s linear study, every key resolved (its defaults included)."""
        return asdict(StudyConfig.from_dict(self.config.get("linear_study", {})))

    # -- runs and their files ---------------------------------------------------------------------

    def student_runs(self) -> list[tuple[str, str, int]]:
        return [(d, c, s) for d in self.datasets() for c in self._cells[d] for s in self.student_seeds]

    def teacher_runs(self) -> list[tuple[str, str, int]]:
        return [(d, k, s) for d, kinds in self.teacher_kinds.items() for k in kinds for s in self.teacher_seeds]

    def attacked_runs(self) -> list[tuple[str, str, int]]:
        return [(d, c, s) for d, c, s in self.student_runs() if self._cells[d][c].attacks]

    def _selection(self, dataset: str, kind: str | None) -> str | None:
        return self.layout.teacher(dataset, kind, "best.json") if kind else None

    def result_files(self, dataset: str, cell: str, needs: frozenset[str] = frozenset({"eval", "attack"})):
        """(path, expected settings, selection file of its teacher or None) of a student cell's result
        files, seed by seed."""
        c, L = self.cell(dataset, cell), self.layout
        selection = self._selection(dataset, c.teacher_kind)
        for s in self.student_seeds:
            if "eval" in needs:
                yield L.student(dataset, cell, s, "eval.parquet"), self.student_eval_settings(dataset, cell, s), selection
            if "attack" in needs and c.attacks:
                yield L.student(dataset, cell, s, "attack.parquet"), self.attack_settings(dataset, cell, s), selection

    def teacher_result_file(self, dataset: str, kind: str) -> tuple[str, dict, str]:
        """(path, expected settings, selection file) of a selected teacher's evaluation."""
        return (self.layout.teacher(dataset, kind, "eval.parquet"), self.teacher_eval_settings(dataset, kind),
                self._selection(dataset, kind))

    def all_result_files(self) -> list[tuple[str, dict, str | None]]:
        """Every evaluation and attack file of the config: selected teachers and students."""
        files = [self.teacher_result_file(d, k) for d, kinds in self.teacher_kinds.items() for k in kinds]
        for d in self.datasets():
            for c in self._cells[d]:
                files += self.result_files(d, c)
        return files

    def expected(self, files: list[tuple[str, dict, str | None]]) -> dict:
        """What a table or the aggregate checks its inputs against (its rule params): every file's
        expected settings, and the selection file whose seed each file's rows must record as their
        teacher's (the seed depends on the teachers' results, so it is read, not planned)."""
        out = lineage.pack({path: settings for path, settings, _ in files})
        out["selections"] = {path: selection for path, _, selection in files if selection}
        return out


# -- tables and figures -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """A table or figure: the experiment whose cells it shows, which files of their runs it reads
    ("eval", "attack", "teacher": the selected teachers' evaluations), and the function that builds it
    from the result rows and its `ReportContext`."""

    name: str
    kind: str  # "table" or "figure"
    experiment: str
    reads: frozenset[str]
    build: Callable


REPORTS: dict[str, Report] = {}


def _register(kind: str, name: str, experiment: str, reads: set[str]):
    def register(build: Callable) -> Callable:
        REPORTS[name] = Report(name, kind, experiment, frozenset(reads), build)
        return build

    return register


def table(name: str, experiment: str, reads: set[str]):
    """Register a table builder `build(frame, ctx) -> noisekd.tables.Table`: it becomes a target."""
    return _register("table", name, experiment, reads)


def figure(name: str, experiment: str, reads: set[str]):
    """Register a figure builder `build(frame, ctx) -> matplotlib Figure`: it becomes a target."""
    return _register("figure", name, experiment, reads)


def reports() -> dict[str, Report]:
    """Every registered table and figure: the paper's (`noisekd.paper`) and any registered since."""
    from . import paper  # noqa: F401 (its tables and figures register themselves on import)

    return REPORTS


@dataclass(frozen=True)
class ReportContext:
    """What one table or figure shows, as plain data: its rule params, and the report functions' only
    view of the plan (the layout of its experiment, its cells, the attacks, the OOD sets, the seeds)."""

    tables: dict  # experiment -> dataset -> layout (CellRows, SigmaPairs...), for this report's experiment
    cells: dict  # dataset -> cell name -> Cell (their attacks only where the report reads attacks)
    pgd20: AttackSetting | None  # the attacks: None and () where the report reads none
    table4_attacks: tuple[AttackSetting, ...]
    table5_attacks: tuple[AttackSetting, ...]
    ood_sources: dict  # dataset -> OOD source name (None without an OOD set)
    student_seeds: tuple[int, ...]

    def cell(self, dataset: str, name: str) -> Cell:
        try:
            return self.cells[dataset][name]
        except KeyError:
            raise NoiseKDError(f"no student cell {name!r} for dataset {dataset!r} in this report") from None

    def to_params(self) -> dict:
        return {"tables": {e: {d: layout_to_params(v) for d, v in by.items()} for e, by in self.tables.items()},
                "cells": {d: {n: c.to_dict() for n, c in cells.items()} for d, cells in self.cells.items()},
                "pgd20": asdict(self.pgd20) if self.pgd20 else None,
                "table4_attacks": [asdict(a) for a in self.table4_attacks],
                "table5_attacks": [asdict(a) for a in self.table5_attacks], "ood_sources": self.ood_sources,
                "student_seeds": list(self.student_seeds)}

    @classmethod
    def from_params(cls, p: dict) -> "ReportContext":
        return cls({e: {d: layout_from_params(v) for d, v in by.items()} for e, by in p["tables"].items()},
                   {d: {n: Cell.from_dict(c) for n, c in cells.items()} for d, cells in p["cells"].items()},
                   AttackSetting(**p["pgd20"]) if p["pgd20"] else None,
                   tuple(AttackSetting(**a) for a in p["table4_attacks"]),
                   tuple(AttackSetting(**a) for a in p["table5_attacks"]), p["ood_sources"], tuple(p["student_seeds"]))


def report_names(plan: Plan, kind: str) -> list[str]:
    """The tables (kind "table") or figures ("figure") whose experiment this config runs."""
    return [n for n, r in reports().items() if r.kind == kind and plan.tables.get(r.experiment)]


def _layout(plan: Plan, name: str) -> dict:
    experiment = reports()[name].experiment
    layout = plan.tables.get(experiment)
    if not layout:
        where = (f"experiments.soft_randomization.{experiment}_sigma" if experiment in ("table4", "table5")
                 else f"experiments.{experiment}")
        raise NoiseKDError(f"{name} needs {where} in the config")
    return layout


def report_files(plan: Plan, name: str) -> list[tuple[str, dict, str | None]]:
    """(path, expected settings, selection file) of every result file one table or figure reads."""
    reads = reports()[name].reads
    files = []
    for dataset, layout in _layout(plan, name).items():
        cells = list(dict.fromkeys(layout.names()))
        for c in cells:
            files += plan.result_files(dataset, c, reads)
        if "teacher" in reads:
            kinds = {plan.cell(dataset, c).teacher_kind for c in cells} - {None}
            files += [plan.teacher_result_file(dataset, k) for k in sorted(kinds)]
    return files


def report_inputs(plan: Plan, name: str) -> list[str]:
    """The run files one table or figure needs: nothing else is built when it is asked for alone."""
    return [path for path, _, _ in report_files(plan, name)]


def selection_inputs(files: list[tuple[str, dict, str | None]]) -> list[str]:
    """The selection files (best.json) whose seeds the result files' teacher seeds are checked against."""
    return sorted({selection for _, _, selection in files if selection})


def report_context(plan: Plan, name: str) -> ReportContext:
    """The rule params of one table or figure: only what it shows, so that a config edit reruns it only
    where it changes what it shows (a PGD setting does not rerun Table 1)."""
    report = reports()[name]
    layout = _layout(plan, name)
    attacks = "attack" in report.reads
    cells = {d: {c: plan.cell(d, c) if attacks else replace(plan.cell(d, c), attacks=())
                 for c in dict.fromkeys(sub.names())} for d, sub in layout.items()}
    ood = {d: (plan.ood_settings(d) or {}).get("source") for d in layout}
    return ReportContext({report.experiment: layout}, cells, plan.pgd20 if attacks else None,
                         plan.table4_attacks if attacks else (), plan.table5_attacks if attacks else (), ood,
                         tuple(plan.student_seeds))


def scorecard_context(plan: Plan) -> ReportContext:
    """The scorecard's rule params: every experiment's layout and every cell with its attacks, since the
    scorecard sets the whole run beside the paper."""
    tables = {e: layout for e, layout in plan.tables.items() if layout}
    cells = {d: dict(plan.cells(d)) for d in plan.datasets()}
    ood = {d: (plan.ood_settings(d) or {}).get("source") for d in cells}
    return ReportContext(tables, cells, plan.pgd20, plan.table4_attacks, plan.table5_attacks, ood,
                         tuple(plan.student_seeds))
