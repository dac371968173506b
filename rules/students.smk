# Students: every cell (method x parameters x label corruption) for every student seed.


rule train_student:
    input:
        unpack(student_inputs),
    output:
        model=f"{STUDENT}/model.pt",
        summary=f"{STUDENT}/summary.json",
    log:
        f"{R}/logs/train_student/{{dataset}}_{{cell}}_seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/train_student/{{dataset}}_{{cell}}_seed{{seed}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU,
        runtime=config["resources"].get("train_runtime_min", 720),
        mem_mb=config["resources"].get("train_mem_mb", 16000),
    script:
        "../workflow_scripts/train_student.py"
