# The paper's figures.


rule figure2:
    input:
        LAYOUT.table("roc_auc.csv"),
    output:
        report(
            LAYOUT.figure(2),
            caption="../report/figure2.rst",
            category="Figures",
        ),
    log:
        "logs/figures/figure2.log",
    conda:
        ENV
    script:
        "../scripts/figure2.py"


rule figure3:
    input:
        LAYOUT.table("f1.csv"),
    output:
        report(
            LAYOUT.figure(3),
            caption="../report/figure3.rst",
            category="Figures",
        ),
    log:
        "logs/figures/figure3.log",
    conda:
        ENV
    params:
        policies=figure3_policies(config),
    script:
        "../scripts/figure3.py"


rule figure5:
    input:
        LAYOUT.table("transfer_roc_auc.csv"),
    output:
        report(
            LAYOUT.figure(5),
            caption="../report/figure5.rst",
            category="Figures",
        ),
    log:
        "logs/figures/figure5.log",
    conda:
        ENV
    script:
        "../scripts/figure5.py"
