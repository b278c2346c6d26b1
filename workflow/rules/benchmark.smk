# Table 2: inference throughput and memory (paper protocol and production mode) per architecture,
# measured on the test split with the model of the largest training fraction, and the study's
# compute estimate from short training bursts.

from alertvision.workload import workload_plan


rule benchmark_throughput:
    input:
        unpack(benchmark_inputs),
    output:
        "results/table2/{arch}.json",
    params:
        arch=lambda wildcards: config["archs"][wildcards.arch],
        training=lambda wildcards: training_params(config, wildcards.arch),
        benchmark=config["benchmark"],
    threads: config["benchmark"]["cpu_threads"]
    resources:
        gpu=config["resources"]["benchmark"]["gpu"],
        runtime=config["resources"]["benchmark"]["runtime"],
        mem_mb=config["resources"]["benchmark"]["mem_mb"],
    benchmark:
        "results/benchmarks/benchmark_throughput/{arch}.tsv"
    log:
        "logs/benchmark/{arch}.log",
    conda:
        ENV
    script:
        "../scripts/benchmark_throughput.py"


# The compute estimate below the table reads the workload from the config (params: a changed grid,
# epochs or sweep reruns this job only) and counts the training alerts in the ZTF dataset.
rule table2:
    input:
        json=expand("results/table2/{arch}.json", arch=config["grid"]["archs"]),
        alerts=dataset_files("ztf")["alerts"],
    output:
        csv=report("results/table2.csv", caption="../report/table2.rst", category="Tables"),
        md=report("results/table2.md", caption="../report/table2.rst", category="Tables"),
        tex="results/table2.tex",
    params:
        workload=workload_plan(config),
        splits=config["splits"],
    log:
        "logs/benchmark/table2.log",
    conda:
        ENV
    script:
        "../scripts/table2.py"
