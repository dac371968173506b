# Students: every cell (method x parameters x label corruption), its seeds trained in one job
# (side by side on its GPU; one after another on a CPU).


rule train_students:
    input:
        unpack(student_inputs),
    output:
        models=[f"{CELL}/seed{s}/model.pt" for s in PLAN.student_seeds],
        summaries=[f"{CELL}/seed{s}/summary.json" for s in PLAN.student_seeds],
    log:
        f"{R}/logs/train_students/{{dataset}}_{{cell}}.log",
    benchmark:
        f"{R}/benchmarks/train_students/{{dataset}}_{{cell}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU,
        runtime=config["resources"].get("train_runtime_min", 720),
        mem_mb=config["resources"].get("train_mem_mb", 16000),
    script:
        "../workflow_scripts/train_students.py"
