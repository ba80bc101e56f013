rule aggregate:
    input:
        all_metrics(),
    output:
        summary="results/tables/summary.csv",
    log:
        "logs/aggregate.log",
    shell:
        "bpfree aggregate {input} --summary {output.summary} > {log} 2>&1"
