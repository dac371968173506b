# Download / prepare datasets, out-of-distribution sets, corruption stacks and corrupted labels.
# Downloads run on the submitting host (compute nodes often have no internet).


localrules:
    prepare_dataset,
    prepare_ood,
    fetch_corruptions,
    corrupt_labels,


rule prepare_dataset:
    output:
        train=f"{DATA}/train.npz",
        val=f"{DATA}/val.npz",
        test=f"{DATA}/test.npz",
    log:
        f"{R}/logs/prepare_dataset/{{dataset}}.log",
    conda:
        ENV
    resources:
        runtime=60,
        mem_mb=8000,
    params:
        dataset=dataset_config,
        data_dir=config["data_dir"],
        selection=config["teacher_selection"],
    script:
        "../workflow_scripts/prepare_dataset.py"


rule prepare_ood:
    input:
        test=f"{DATA}/test.npz",
    output:
        f"{DATA}/ood.npz",
    log:
        f"{R}/logs/prepare_ood/{{dataset}}.log",
    conda:
        ENV
    resources:
        runtime=60,
        mem_mb=8000,
    params:
        dataset=dataset_config,
        data_dir=config["data_dir"],
    script:
        "../workflow_scripts/prepare_ood.py"


rule fetch_corruptions:
    output:
        f"{DATA}/corruptions_fetched.json",
    log:
        f"{R}/logs/fetch_corruptions/{{dataset}}.log",
    conda:
        ENV
    params:
        dataset=dataset_config,
        data_dir=config["data_dir"],
    script:
        "../workflow_scripts/fetch_corruptions.py"


rule prepare_corruptions:
    input:
        fetched=released_corruptions,
        test=f"{DATA}/test.npz",
    output:
        f"{DATA}/corruptions.npy",
    log:
        f"{R}/logs/prepare_corruptions/{{dataset}}.log",
    conda:
        ENV
    threads: 2
    resources:
        runtime=120,
        mem_mb=16000,
    params:
        dataset=dataset_config,
        data_dir=config["data_dir"],
    script:
        "../workflow_scripts/prepare_corruptions.py"


rule corrupt_labels:
    input:
        train=f"{DATA}/train.npz",
    output:
        f"{DATA}/labels_lc{{rate}}.npz",
    log:
        f"{R}/logs/corrupt_labels/{{dataset}}_lc{{rate}}.log",
    conda:
        ENV
    params:
        seed=config.get("label_corruption_seed", 0),
    script:
        "../workflow_scripts/corrupt_labels.py"
