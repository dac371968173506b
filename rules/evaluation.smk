# Evaluation of every student cell: clean, OOD and corruption accuracy; PGD attacks where a table needs
# them.  One job per cell evaluates (attacks) all its seeds, one after another, as training packs them.


rule evaluate_students:
    input:
        unpack(evaluation_sets),
        models=[L.student(D, C, s, "model.pt") for s in PLAN.student_seeds],
        summaries=[L.student(D, C, s, "summary.json") for s in PLAN.student_seeds],
    output:
        [L.student(D, C, s, "eval.parquet") for s in PLAN.student_seeds],
    log:
        L.log("evaluate_students", f"{D}_{C}"),
    benchmark:
        L.benchmark("evaluate_students", f"{D}_{C}")
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU,
        runtime=eval_runtime,
        mem_mb=gpu_job_mem_mb,
    params:
        **settings("evaluate_students"),
        seeds=PLAN.student_seeds,
    script:
        "../workflow_scripts/evaluate_students.py"


rule attack_students:
    input:
        models=[L.student(D, C, s, "model.pt") for s in PLAN.student_seeds],
        summaries=[L.student(D, C, s, "summary.json") for s in PLAN.student_seeds],
        test=L.split(D, "test"),
    output:
        [L.student(D, C, s, "attack.parquet") for s in PLAN.student_seeds],
    log:
        L.log("attack_students", f"{D}_{C}"),
    benchmark:
        L.benchmark("attack_students", f"{D}_{C}")
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU,
        runtime=attack_runtime,
        mem_mb=gpu_job_mem_mb,
    params:
        **settings("attack_students"),
        seeds=PLAN.student_seeds,
    script:
        "../workflow_scripts/attack_students.py"
