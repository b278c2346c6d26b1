# Table 2: inference throughput and memory (paper protocol and production mode) per architecture,
# measured on the test split with the model of the largest training fraction, and the study's
# compute estimate from short training bursts.

from alertvision.reports.workload import workload_plan


rule benchmark_throughput:
    input:
        unpack(benchmark_inputs),
    output:
        LAYOUT.table2_json(),
    log:
        "logs/benchmark/{arch}.log",
    benchmark:
        LAYOUT.job_benchmark("benchmark_throughput", "{arch}")
    conda:
        ENV
    threads: config["benchmark"]["cpu_threads"]
    resources:
        gpu=config["resources"]["benchmark"]["gpu"],
        runtime=config["resources"]["benchmark"]["runtime"],
        mem_mb=config["resources"]["benchmark"]["mem_mb"],
    params:
        arch=lambda wildcards: config["archs"][wildcards.arch],
        training=lambda wildcards: training_params(config, wildcards.arch),
        benchmark=config["benchmark"],
    script:
        "../scripts/benchmark_throughput.py"


# The compute estimate below the table reads the workload from the config (params: a changed grid,
# epochs or sweep reruns this job only) and counts the training alerts in the ZTF dataset.
rule table2:
    input:
        json=expand(LAYOUT.table2_json(), arch=config["grid"]["archs"]),
        alerts=dataset_files("ztf")["alerts"],
    output:
        csv=report(LAYOUT.table2_file("csv"), caption="../report/table2.rst", category="Tables"),
        md=report(LAYOUT.table2_file("md"), caption="../report/table2.rst", category="Tables"),
        tex=LAYOUT.table2_file("tex"),
    log:
        "logs/benchmark/table2.log",
    conda:
        ENV
    params:
        workload=workload_plan(config),
        splits=config["splits"],
    script:
        "../scripts/table2.py"
