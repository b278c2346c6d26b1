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
