# Download / prepare datasets, out-of-distribution sets, corruption stacks and corrupted labels.
# Downloads run on the submitting host (compute nodes often have no internet).


localrules:
    prepare_dataset,
    prepare_ood,
    fetch_corruptions,
    corrupt_labels,


rule prepare_dataset:
    output:
        train=L.split(D, "train"),
        val=L.split(D, "val"),
        test=L.split(D, "test"),
    log:
        L.log("prepare_dataset", D),
    conda:
        ENV
    resources:
        runtime=data_runtime,
        mem_mb=data_mem_mb,
    params:
        **settings("prepare_dataset"),
    script:
        "../workflow_scripts/prepare_dataset.py"


rule prepare_ood:
    input:
        test=L.split(D, "test"),
    output:
        L.data(D, "ood.npz"),
    log:
        L.log("prepare_ood", D),
    conda:
        ENV
    resources:
        runtime=data_runtime,
        mem_mb=data_mem_mb,
    params:
        **settings("prepare_ood"),
    script:
        "../workflow_scripts/prepare_ood.py"


# The released CIFAR-10-C: fixed files (md5-checked), so no settings.
rule fetch_corruptions:
    output:
        L.data(D, "corruptions_fetched.json"),
    log:
        L.log("fetch_corruptions", D),
    conda:
        ENV
    script:
        "../workflow_scripts/fetch_corruptions.py"


rule prepare_corruptions:
    input:
        fetched=released_corruptions,
        test=L.split(D, "test"),
    output:
        L.data(D, "corruptions.npy"),
    log:
        L.log("prepare_corruptions", D),
    conda:
        ENV
    threads: 2
    resources:
        runtime=data_runtime,
        mem_mb=data_mem_mb,
    params:
        **settings("prepare_corruptions"),
    script:
        "../workflow_scripts/prepare_corruptions.py"


rule corrupt_labels:
    input:
        train=L.split(D, "train"),
    output:
        L.labels(D, "{rate}"),
    log:
        L.log("corrupt_labels", f"{D}_lc{{rate}}"),
    conda:
        ENV
    params:
        **settings("corrupt_labels"),
    script:
        "../workflow_scripts/corrupt_labels.py"
