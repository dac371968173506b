# Path templates, wildcard constraints, input and params functions shared by the rules.
# All logic lives in noisekd.plan.Plan and every path in noisekd.layout.Layout; this file only turns
# them into file lists and per-job settings.

import os

from snakemake.exceptions import IncompleteCheckpointException

from noisekd import resources as res
from noisekd import selection
from noisekd.plan import (
    SETTINGS_BLOCKS,
    report_context,
    report_files,
    scorecard_context,
    selection_inputs,
)


wildcard_constraints:
    dataset=r"[a-z0-9_]+",
    kind=r"plain|p[0-9.]+|lc[0-9.]+",
    cell=r"[a-z0-9_.+]+",
    seed=r"\d+",
    rate=r"[0-9.]+",
    split=r"train|val|test",


ENV = "../envs/noisekd.yaml"
# The paper's numbers, as data (an input: editing them reruns the scorecard).
PUBLISHED = os.path.relpath(
    os.path.join(workflow.basedir, "report", "published", "paper.csv")
)
GPU = config["resources"]["gpu"]
# CPUs per GPU job (sbatch --cpus-per-task; locally capped at --cores)
THREADS = res.setting(config["resources"], "threads")
L = PLAN.layout
# Wildcard placeholders, so that one Layout call gives a rule's path pattern.
D, K, C, S = "{dataset}", "{kind}", "{cell}", "{seed}"


def settings(rule_name):
    """The params of a rule: one per block of its jobs' settings (noisekd.plan.Plan.settings), so that
    a config edit reruns exactly the jobs whose settings it changes, and says which block changed.
    """

    def block_of(name):
        return lambda wildcards: PLAN.settings(rule_name, **wildcards)[name]

    return {name: block_of(name) for name in SETTINGS_BLOCKS[rule_name]}


def released_corruptions(wildcards):
    """The fetched CIFAR-10-C where the dataset uses the released files (a local job: it downloads)."""
    spec = PLAN.corruption_settings(wildcards.dataset) or {}
    if spec.get("source") == "released":
        return [L.data(wildcards.dataset, "corruptions_fetched.json")]
    return []


def evaluation_sets(wildcards):
    """Test set plus, where the dataset has them, the OOD set and the corruption stack."""
    d = wildcards.dataset
    files = {"test": L.split(d, "test")}
    if PLAN.ood_settings(d):
        files["ood"] = L.data(d, "ood.npz")
    if PLAN.corruption_settings(d):
        files["corruptions"] = L.data(d, "corruptions.npy")
    return files


def labels_file(dataset, label_corruption):
    return (
        {"labels": L.labels(dataset, label_corruption)} if label_corruption > 0 else {}
    )


# -- the selected teacher ---------------------------------------------------------------------------
# select_teacher is a checkpoint: the jobs that load the selected teacher read its seed when the DAG
# is built (or rebuilt, once a selection has run), take exactly that teacher's model as input and its
# seed as a parameter.  Switching teacher_selection.by therefore reruns only the jobs whose selected
# seed changes.


def _selection_file(dataset, kind):
    return checkpoints.select_teacher.get(dataset=dataset, kind=kind).output[0]


def _selected_model(dataset, kind):
    seed = selection.selected_seed(
        _selection_file(dataset, kind), config["teacher_selection"]["by"]
    )
    return L.teacher_run(dataset, kind, seed, "model.pt")


def _selected_seed(dataset, kind):
    try:
        path = _selection_file(dataset, kind)
    except IncompleteCheckpointException:
        return "pending"  # replaced: the job is rebuilt once the selection has run
    return selection.selected_seed(path, config["teacher_selection"]["by"])


def selected_teacher_model(wildcards):
    return _selected_model(wildcards.dataset, wildcards.kind)


def selected_teacher_seed(wildcards):
    return _selected_seed(wildcards.dataset, wildcards.kind)


def student_teacher(wildcards):
    """A cell's teacher: nothing, its logits table, or the selected teacher's model."""
    cell = PLAN.cell(wildcards.dataset, wildcards.cell)
    if cell.teacher_kind is None:
        return {}
    if PLAN.uses_teacher_logits(cell):
        return {
            "teacher_logits": L.teacher(
                wildcards.dataset, cell.teacher_kind, "train_logits.pt"
            )
        }
    return {"teacher": _selected_model(wildcards.dataset, cell.teacher_kind)}


def student_teacher_seed(wildcards):
    """The selected seed, for the cells that load the teacher itself (a logits table records its own)."""
    cell = PLAN.cell(wildcards.dataset, wildcards.cell)
    if cell.teacher_kind is None or PLAN.uses_teacher_logits(cell):
        return None
    return _selected_seed(wildcards.dataset, cell.teacher_kind)


def student_data(wildcards):
    cell = PLAN.cell(wildcards.dataset, wildcards.cell)
    return {
        "train": L.split(wildcards.dataset, "train"),
        **labels_file(wildcards.dataset, cell.label_corruption),
    }


def teacher_inputs(wildcards):
    kind = PLAN.teacher_kinds[wildcards.dataset][wildcards.kind]
    return {
        **{
            split: L.split(wildcards.dataset, split)
            for split in ("train", "val", "test")
        },
        **labels_file(wildcards.dataset, kind.label_corruption),
    }


def teacher_summaries(wildcards):
    return [
        L.teacher_run(wildcards.dataset, wildcards.kind, s, "summary.json")
        for s in PLAN.teacher_seeds
    ]


# -- what tables, figures and the aggregate read ----------------------------------------------------


def checked_inputs(files):
    """The result files and the selection files their teacher seeds are checked against."""
    return {
        "runs": [path for path, _, _ in files],
        "selections": selection_inputs(files),
    }


def table_inputs(wildcards):
    return checked_inputs(report_files(PLAN, wildcards.name))


def table_expected(wildcards):
    return PLAN.expected(report_files(PLAN, wildcards.name))


def table_context(wildcards):
    return report_context(PLAN, wildcards.name).to_params()


# -- cluster resources: time limits and memory that grow with each retry (noisekd/resources.py) ----
# Snakemake calls these with the job's wildcards and its attempt (1, then 2 on the first retry, ...).


def teacher_runtime(wildcards, attempt):
    """A teacher kind's seeds on the standard schedule (train.epochs)."""
    epochs = PLAN.train_config(0).epochs
    return res.train_runtime_min(
        config["resources"], epochs, len(PLAN.teacher_seeds), attempt
    )


def student_runtime(wildcards, attempt):
    """A cell's seeds on its own schedule (Fickle Teacher students: fickle_schedules)."""
    cell = PLAN.cell(wildcards.dataset, wildcards.cell)
    epochs = PLAN.train_config(0, cell).epochs
    return res.train_runtime_min(
        config["resources"], epochs, len(PLAN.student_seeds), attempt
    )


def per_attempt(key):
    """A fixed config.yaml `resources` value as a rule resource that grows with each retry."""
    return lambda wildcards, attempt: res.per_attempt(config["resources"], key, attempt)


gpu_job_mem_mb = per_attempt("train_mem_mb")
eval_runtime = per_attempt("eval_runtime_min")
attack_runtime = per_attempt("attack_runtime_min")
data_runtime = per_attempt("data_runtime_min")
data_mem_mb = per_attempt("data_mem_mb")
