# Students: every cell (method x parameters x label corruption), its seeds trained in one job
# (side by side on its GPU; one after another on a CPU).


rule train_students:
    input:
        unpack(student_data),
        unpack(student_teacher),
    output:
        models=[L.student(D, C, s, "model.pt") for s in PLAN.student_seeds],
        summaries=[L.student(D, C, s, "summary.json") for s in PLAN.student_seeds],
    log:
        L.log("train_students", f"{D}_{C}"),
    benchmark:
        L.benchmark("train_students", f"{D}_{C}")
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU,
        runtime=student_runtime,
        mem_mb=gpu_job_mem_mb,
    params:
        **settings("train_students"),
        seeds=PLAN.student_seeds,
        teacher_seed=student_teacher_seed,
    script:
        "../workflow_scripts/train_students.py"
