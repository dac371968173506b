# Path templates, wildcard constraints and input functions shared by the rules.
# All logic lives in noisekd.plan.Plan; this file only turns it into file lists.


wildcard_constraints:
    dataset=r"[a-z0-9_]+",
    kind=r"plain|p[0-9.]+|lc[0-9.]+",
    cell=r"[a-z0-9_.+]+",
    seed=r"\d+",
    rate=r"[0-9.]+",
    split=r"train|val|test",


ENV = "../envs/noisekd.yaml"
GPU = config["resources"]["gpu"]
THREADS = config["resources"].get("threads", 1)
TEACHER = f"{R}/teachers/{{dataset}}/{{kind}}"
CELL = f"{R}/students/{{dataset}}/{{cell}}"
STUDENT = f"{CELL}/seed{{seed}}"
DATA = f"{R}/data/{{dataset}}"


def dataset_config(wildcards):
    return PLAN.dataset_configs[wildcards.dataset]


def released_corruptions(wildcards):
    """The fetched CIFAR-10-C where the dataset uses the released files (a local job: it downloads)."""
    spec = PLAN.dataset_configs[wildcards.dataset].get("corruptions") or {}
    return (
        [f"{DATA}/corruptions_fetched.json"] if spec.get("source") == "released" else []
    )


def evaluation_sets(wildcards):
    """Test set plus, where the dataset has them, the OOD set and the corruption stack."""
    d = PLAN.dataset_configs[wildcards.dataset]
    files = {"test": f"{R}/data/{wildcards.dataset}/test.npz"}
    if d.get("ood"):
        files["ood"] = f"{R}/data/{wildcards.dataset}/ood.npz"
    if d.get("corruptions"):
        files["corruptions"] = f"{R}/data/{wildcards.dataset}/corruptions.npy"
    return files


def labels_file(dataset, label_corruption):
    if label_corruption > 0:
        return {"labels": f"{R}/data/{dataset}/labels_lc{label_corruption:g}.npz"}
    return {}


def teacher_inputs(wildcards):
    kind = PLAN.teacher_kinds[wildcards.dataset][wildcards.kind]
    return {
        "train": f"{R}/data/{wildcards.dataset}/train.npz",
        "val": f"{R}/data/{wildcards.dataset}/val.npz",
        "test": f"{R}/data/{wildcards.dataset}/test.npz",
        **labels_file(wildcards.dataset, kind.label_corruption),
    }


def student_inputs(wildcards):
    cell = PLAN.cell(wildcards.dataset, wildcards.cell)
    files = {
        "train": f"{R}/data/{wildcards.dataset}/train.npz",
        **labels_file(wildcards.dataset, cell.label_corruption),
    }
    if cell.teacher_kind is not None:
        base = f"{R}/teachers/{wildcards.dataset}/{cell.teacher_kind}"
        files["best"] = f"{base}/best.json"
        if PLAN.uses_teacher_logits(cell):
            files["teacher_logits"] = f"{base}/train_logits.pt"
        else:
            files["teachers"] = [f"{base}/seed{s}/model.pt" for s in PLAN.teacher_seeds]
    return files


def teacher_models(wildcards):
    return [
        f"{R}/teachers/{wildcards.dataset}/{wildcards.kind}/seed{s}/model.pt"
        for s in PLAN.teacher_seeds
    ]


def teacher_summaries(wildcards):
    return [
        f"{R}/teachers/{wildcards.dataset}/{wildcards.kind}/seed{s}/summary.json"
        for s in PLAN.teacher_seeds
    ]


def run_outputs():
    """Every evaluation file of the config: selected teachers, students, attacks."""
    files = [
        f"{R}/teachers/{d}/{k}/eval.parquet"
        for d, kinds in PLAN.teacher_kinds.items()
        for k in kinds
    ]
    files += [
        f"{R}/students/{d}/{c}/seed{s}/eval.parquet" for d, c, s in PLAN.student_runs()
    ]
    files += [
        f"{R}/students/{d}/{c}/seed{s}/attack.parquet"
        for d, c, s in PLAN.attacked_runs()
    ]
    return files
