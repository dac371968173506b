# Evaluation of every student: clean, OOD and corruption accuracy; PGD attacks where a table needs them.


rule evaluate_student:
    input:
        unpack(evaluation_sets),
        model=f"{STUDENT}/model.pt",
        summary=f"{STUDENT}/summary.json",
    output:
        f"{STUDENT}/eval.parquet",
    log:
        f"{R}/logs/evaluate_student/{{dataset}}_{{cell}}_seed{{seed}}.log",
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU,
        runtime=config["resources"].get("eval_runtime_min", 120),
        mem_mb=config["resources"].get("train_mem_mb", 16000),
    script:
        "../workflow_scripts/evaluate_student.py"


rule attack_student:
    input:
        model=f"{STUDENT}/model.pt",
        summary=f"{STUDENT}/summary.json",
        test=f"{DATA}/test.npz",
    output:
        f"{STUDENT}/attack.parquet",
    log:
        f"{R}/logs/attack_student/{{dataset}}_{{cell}}_seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/attack_student/{{dataset}}_{{cell}}_seed{{seed}}.tsv"
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU,
        runtime=config["resources"].get("attack_runtime_min", 360),
        mem_mb=config["resources"].get("train_mem_mb", 16000),
    script:
        "../workflow_scripts/attack_student.py"
