# Teachers: every kind (plain, dropout p for Fickle Teacher, corrupted labels for Messy
# Collaboration), its seeds trained in one job (side by side on its GPU), then the best seed per
# kind and its evaluation.


rule train_teachers:
    input:
        unpack(teacher_inputs),
    output:
        models=[f"{TEACHER}/seed{s}/model.pt" for s in PLAN.teacher_seeds],
        summaries=[f"{TEACHER}/seed{s}/summary.json" for s in PLAN.teacher_seeds],
    log:
        f"{R}/logs/train_teachers/{{dataset}}_{{kind}}.log",
    benchmark:
        f"{R}/benchmarks/train_teachers/{{dataset}}_{{kind}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU,
        runtime=config["resources"].get("train_runtime_min", 720),
        mem_mb=config["resources"].get("train_mem_mb", 16000),
    script:
        "../workflow_scripts/train_teachers.py"


rule select_teacher:
    input:
        teacher_summaries,
    output:
        f"{TEACHER}/best.json",
    log:
        f"{R}/logs/select_teacher/{{dataset}}_{{kind}}.log",
    localrule: True
    conda:
        ENV
    params:
        by=config["teacher_selection"]["by"],
    script:
        "../workflow_scripts/select_teacher.py"


rule evaluate_teacher:
    input:
        unpack(evaluation_sets),
        best=f"{TEACHER}/best.json",
        models=teacher_models,
    output:
        f"{TEACHER}/eval.parquet",
    log:
        f"{R}/logs/evaluate_teacher/{{dataset}}_{{kind}}.log",
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU,
        runtime=config["resources"].get("eval_runtime_min", 120),
        mem_mb=config["resources"].get("train_mem_mb", 16000),
    script:
        "../workflow_scripts/evaluate_teacher.py"


# The selected teacher's logits of every training image under every crop/flip, read by the students
# whose teacher gives only logits (Hinton, SR, MC, Noisy Teacher) instead of running it every step.
rule teacher_logits:
    input:
        best=f"{TEACHER}/best.json",
        models=teacher_models,
        train=f"{DATA}/train.npz",
    output:
        f"{TEACHER}/train_logits.pt",
    log:
        f"{R}/logs/teacher_logits/{{dataset}}_{{kind}}.log",
    benchmark:
        f"{R}/benchmarks/teacher_logits/{{dataset}}_{{kind}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU,
        runtime=config["resources"].get("eval_runtime_min", 120),
        mem_mb=config["resources"].get("train_mem_mb", 16000),
    script:
        "../workflow_scripts/teacher_logits.py"
