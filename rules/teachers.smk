# Teachers: every kind (plain, dropout p for Fickle Teacher, corrupted labels for Messy
# Collaboration), its seeds trained in one job (side by side on its GPU), then the best seed per
# kind (a checkpoint: its consumers read the seed, see common.smk) and its evaluation.


rule train_teachers:
    input:
        unpack(teacher_inputs),
    output:
        models=[L.teacher_run(D, K, s, "model.pt") for s in PLAN.teacher_seeds],
        summaries=[L.teacher_run(D, K, s, "summary.json") for s in PLAN.teacher_seeds],
    log:
        L.log("train_teachers", f"{D}_{K}"),
    benchmark:
        L.benchmark("train_teachers", f"{D}_{K}")
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU,
        runtime=teacher_runtime,
        mem_mb=gpu_job_mem_mb,
    params:
        **settings("train_teachers"),
        seeds=PLAN.teacher_seeds,
    script:
        "../workflow_scripts/train_teachers.py"


# The seed each selection rule picks, from the teachers' results alone: no settings.
checkpoint select_teacher:
    input:
        teacher_summaries,
    output:
        L.teacher(D, K, "best.json"),
    log:
        L.log("select_teacher", f"{D}_{K}"),
    localrule: True
    conda:
        ENV
    script:
        "../workflow_scripts/select_teacher.py"


rule evaluate_teacher:
    input:
        unpack(evaluation_sets),
        selection=L.teacher(D, K, "best.json"),
        model=selected_teacher_model,
    output:
        L.teacher(D, K, "eval.parquet"),
    log:
        L.log("evaluate_teacher", f"{D}_{K}"),
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU,
        runtime=eval_runtime,
        mem_mb=gpu_job_mem_mb,
    params:
        **settings("evaluate_teacher"),
        teacher_seed=selected_teacher_seed,
    script:
        "../workflow_scripts/evaluate_teacher.py"


# The selected teacher's logits of every training image under every crop/flip, read by the students
# whose teacher gives only logits (Hinton, SR, MC, Noisy Teacher) instead of running it every step.
rule teacher_logits:
    input:
        model=selected_teacher_model,
        train=L.split(D, "train"),
    output:
        L.teacher(D, K, "train_logits.pt"),
    log:
        L.log("teacher_logits", f"{D}_{K}"),
    benchmark:
        L.benchmark("teacher_logits", f"{D}_{K}")
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU,
        runtime=eval_runtime,
        mem_mb=gpu_job_mem_mb,
    params:
        **settings("teacher_logits"),
        teacher_seed=selected_teacher_seed,
    script:
        "../workflow_scripts/teacher_logits.py"
