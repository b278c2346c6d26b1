# The paper's figures.


rule figure2:
    input:
        "results/tables/roc_auc.csv",
    output:
        report(
            "results/figure2.pdf",
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
        "results/tables/f1.csv",
    output:
        report(
            "results/figure3.pdf",
            caption="../report/figure3.rst",
            category="Figures",
        ),
    params:
        policies=figure3_policies(config),
    log:
        "logs/figures/figure3.log",
    conda:
        ENV
    script:
        "../scripts/figure3.py"
