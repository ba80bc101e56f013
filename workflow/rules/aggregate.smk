# Every run's metrics.json and history.csv -> the study's tables (CSV, Markdown, LaTeX).
rule aggregate:
    input:
        metrics=all_metrics(),
        histories=all_histories(),
    output:
        **{
            name: report(
                f"results/tables/{name}.csv",
                caption=f"../report/table_{name}.rst",
                category="Tables",
            )
            for name in TABLES
        },
        other=[path for path in all_tables() if not path.endswith(".csv")],
        histories="results/tables/histories.csv",
    log:
        "logs/aggregate.log",
    params:
        out_dir=lambda wc, output: Path(output.summary).parent,
    shell:
        "bpfree aggregate {input.metrics:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"
