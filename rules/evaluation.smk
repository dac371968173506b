# Evaluation of every student: clean, OOD and corruption accuracy; PGD attacks where a table needs them.


rule evaluate_student:
    input:
        unpack(evaluation_sets),
        model=L.student(D, C, S, "model.pt"),
        summary=L.student(D, C, S, "summary.json"),
    output:
        L.student(D, C, S, "eval.parquet"),
    log:
        L.log("evaluate_student", f"{D}_{C}_seed{S}"),
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU,
        runtime=config["resources"].get("eval_runtime_min", 120),
        mem_mb=config["resources"].get("train_mem_mb", 16000),
    params:
        **settings("evaluate_student"),
    script:
        "../workflow_scripts/evaluate_student.py"


rule attack_student:
    input:
        model=L.student(D, C, S, "model.pt"),
        summary=L.student(D, C, S, "summary.json"),
        test=L.split(D, "test"),
    output:
        L.student(D, C, S, "attack.parquet"),
    log:
        L.log("attack_student", f"{D}_{C}_seed{S}"),
    benchmark:
        L.benchmark("attack_student", f"{D}_{C}_seed{S}")
    conda:
        ENV
    threads: THREADS
    resources:
        gpu=GPU,
        runtime=config["resources"].get("attack_runtime_min", 360),
        mem_mb=config["resources"].get("train_mem_mb", 16000),
    params:
        **settings("attack_student"),
    script:
        "../workflow_scripts/attack_student.py"
